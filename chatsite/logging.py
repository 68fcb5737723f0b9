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
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

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
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
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
