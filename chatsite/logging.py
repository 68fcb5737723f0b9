"""Keep stream tokens out of logs.

Stream tokens travel in the query string (EventSource cannot set headers), and
servers log request paths with their query strings, as the client sent them:
percent-encoded. Django decodes the query before the view reads `token`, so a
client may spell the parameter `%74oken=`, and a token may hide inside another
parameter's value (`x=1%26token=…` decodes to `1&token=…`). So redaction looks
at each parameter *decoded*, and rewrites the raw text it came from:

* a parameter whose decoded name is `token` (or `access`, `refresh`) loses its value;
* a parameter whose decoded text holds such a parameter, or anything shaped like
  a JWT, loses its value (or, if the name is what hides it, the whole parameter);
* anything shaped like a JWT left anywhere else in the line is replaced.

The line keeps its raw form otherwise: logging decoded text would let a client
write line breaks into the log.

Also here: the two formats of every log line (`DJANGO_LOG_FORMAT=text|json`), the
request id each line carries (set per request by chatsite/accesslog.py), and the
filter that keeps message content out of the logs unless `CHAT_LOG_MESSAGE_CONTENT`.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import re
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"

_SECRET_NAMES = frozenset({"token", "access", "refresh"})
# A token parameter inside decoded text, at its start or after a separator.
_SECRET_PARAM = re.compile(r"(?:^|[?&;])\s*(?:token|access|refresh)\s*=", re.IGNORECASE)
# A JWT: base64url header and payload (JSON objects, so both start `eyJ`, i.e. `{"`), signature.
_JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]*", re.ASCII)
# A query string inside a log line: up to the next space or quote.
_QUERY = re.compile(r"\?([^\s\"']*)")
# A bare `token=…` (a query string logged without its `?`).
_BARE_PARAM = re.compile(r"(^(?:token|access|refresh)=)[^&\s\"']+", re.IGNORECASE)
_SEPARATORS = re.compile(r"([&;])")


def _decoded(text: str) -> str:
    """`text` as Django reads it, and decoded again while that changes anything (a few
    times at most): a doubly encoded token is still a token to whoever reads the log."""
    for _ in range(4):
        decoded = unquote_plus(text)
        if decoded == text:
            break
        text = decoded
    return text


def _hides_a_token(decoded: str) -> bool:
    return bool(_SECRET_PARAM.search(decoded) or _JWT.search(decoded))


def redact_query(query: str) -> str:
    """The raw query string `query` with every parameter that is, or hides, a token redacted."""
    parts = []
    for part in _SEPARATORS.split(query):
        if part in ("&", ";"):
            parts.append(part)
            continue
        name, equals, value = part.partition("=")
        decoded_name = _decoded(name)
        if _hides_a_token(decoded_name):
            parts.append(REDACTED)
            continue
        if equals and (
            decoded_name.strip().lower() in _SECRET_NAMES or _hides_a_token(_decoded(value))
        ):
            value = REDACTED
        parts.append(f"{name}{equals}{value}")
    return "".join(parts)


def redact(text: str) -> str:
    """`text` (a request line, a path, any log message) without stream or API tokens."""
    if "?" in text:
        text = _QUERY.sub(lambda match: "?" + redact_query(match.group(1)), text)
    else:
        text = _BARE_PARAM.sub(rf"\g<1>{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class RedactTokensFilter(logging.Filter):
    """Redacts a record's message and its string arguments in place (uvicorn's access
    formatter unpacks the arguments, so they must stay arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            redacted = redact(record.msg)
            if redacted != record.msg and record.args:
                # The format itself held a token parameter (`"?token=%s"`): redacting it
                # would eat the placeholder, so the message is formatted first.
                record.msg, record.args = redact(record.getMessage()), None
            else:
                record.msg = redacted
        return True


class OneLineErrors(logging.Filter):
    """Turn a record's traceback into one line: for libraries that log a full
    traceback for an expected outage every second (channels_redis's pub/sub
    receive loop while Redis is down), which would bury everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


# --- request ids ----------------------------------------------------------------------

NO_REQUEST = "-"
# The id of the request whose work is running (chatsite/accesslog.py sets it).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the request it was logged for (`-` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


# --- message content --------------------------------------------------------------------

# A string literal in SQL as Django's debug log writes it (parameters inlined, quotes doubled).
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
HIDDEN = "[hidden]"


def _without_literals(sql: str) -> str:
    return _SQL_STRING.sub("'[hidden]'", sql)


class HideMessageContent(logging.Filter):
    """Keeps what users and the model wrote out of the logs unless the site allows it
    (`CHAT_LOG_MESSAGE_CONTENT`, off by default).

    Our own log calls never format a message's text (ids, statuses and error codes
    only). What did: Django's SQL debug log (`django.db.backends` at DEBUG, when
    `DEBUG` is on, as in local settings) writes each statement with its parameters
    inlined — every message sent, every checkpoint of an answer — in its text and, for
    a JSON log, again in its `sql` and `params` fields. Without the setting, the
    statement is logged with its string literals replaced and without parameters.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("django.db.backends") or _content_allowed():
            return True
        if isinstance(record.args, tuple):
            record.args = tuple(_hide(arg) for arg in record.args)
        if isinstance(getattr(record, "sql", None), str):
            record.sql = _without_literals(record.sql)
        if getattr(record, "params", None) is not None:
            record.params = HIDDEN
        return True


def _hide(arg):
    if isinstance(arg, str):
        return _without_literals(arg)
    if arg is None or isinstance(arg, int | float):
        return arg  # a duration, an alias-less None
    return HIDDEN  # parameters: a tuple, a list or a dict of values


def _content_allowed() -> bool:
    from chat.conf import chat_settings

    return bool(chat_settings.LOG_MESSAGE_CONTENT)


# --- formats ------------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, tokens redacted from the whole line
    (a traceback included)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("request_id", NO_REQUEST)
        return redact(super().format(record))


class JsonLinesFormatter(JsonFormatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message,
    request_id, the record's extra fields (an access line's method, path, status,
    duration, bytes), and a traceback as `exc_info`.

    python-json-logger (maintained, used widely) does the mapping of records to JSON,
    extras and exceptions included; what is ours is the field names and that every
    string in the object is redacted before it is serialized (after, a redaction could
    cut a JSON escape in half).
    """

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("request_id", NO_REQUEST)
        return super().format(record)

    def process_log_record(self, log_data: dict) -> dict:
        return {key: _redacted(value) for key, value in log_data.items()}


def _redacted(value):
    """`value` as JSON will show it, tokens redacted. Objects are turned into text here,
    not by the encoder after: Django's `django.request` lines carry the request, whose
    text is its full path, query string (and stream token) included."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    return redact(value if isinstance(value, str) else str(value))
