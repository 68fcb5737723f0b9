"""Token redaction (chatsite/logging.py): on the decoded query, written over the raw line."""

from __future__ import annotations

import logging

import pytest

from chatsite.logging import RedactTokensFilter, redact
from tests.asgi import asgi_request

# The shape of a simplejwt token: header and payload are base64url JSON objects.
TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoic3NlIn0.c2lnbmF0dXJl-_x"


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (f"/s/?token={TOKEN}&x=1", "/s/?token=[redacted]&x=1"),
        (f"/s/?%74oken={TOKEN}", "/s/?%74oken=[redacted]"),
        (f"/s/?%2574oken={TOKEN}", "/s/?%2574oken=[redacted]"),
        (f"/s/?x=1%26token={TOKEN}", "/s/?x=[redacted]"),
        ("/s/?x=1%26token=not-a-jwt&y=2", "/s/?x=[redacted]&y=2"),
        ("/s/?x=1;token=abc", "/s/?x=1;token=[redacted]"),
        ("/s/?x%3D1%26token%3Dabc&y=2", "/s/?[redacted]&y=2"),
        (f"/s/?next=%2Fstream%2F%3Ftoken%3D{TOKEN}", "/s/?next=[redacted]"),
        (f"/s/?x={TOKEN}", "/s/?x=[redacted]"),
        (
            "/s/?TOKEN=abc&access=def&refresh=ghi",
            "/s/?TOKEN=[redacted]&access=[redacted]&refresh=[redacted]",
        ),
        (f"GET /api/v1/{TOKEN}/ HTTP/1.1", "GET /api/v1/[redacted]/ HTTP/1.1"),
        ("token=abc&x=1", "token=[redacted]&x=1"),
    ],
)
def test_tokens_are_redacted_however_the_query_spells_them(line, logged):
    """A token parameter is found by its decoded name, in decoded values, and by its shape."""
    assert redact(line) == logged


@pytest.mark.parametrize(
    "line",
    [
        "GET /stream/conversations/1/?last_event_id=abc:12&q=a%20b HTTP/1.1",
        "/s/?mytoken=1&tokens=2",
        "what? nothing",
        "/s/?x=%0Atoken",  # decoded text is not written to the log
    ],
)
def test_lines_without_tokens_are_left_as_they_are(line):
    """Redaction never rewrites a line without a token (nor decodes it into the log)."""
    assert redact(line) == line


def test_the_filter_redacts_messages_and_arguments_in_place():
    """The logging filter redacts the message and each argument, keeping arguments
    arguments (uvicorn's access formatter unpacks them)."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", f"/?%74oken={TOKEN}"),
        None,
    )
    assert RedactTokensFilter().filter(record)
    assert record.args == ("1.2.3.4", "GET", "/?%74oken=[redacted]")
    record = logging.LogRecord(
        "django",
        logging.WARNING,
        __file__,
        1,
        "%(path)s",
        ({"path": f"/?x=1%26token={TOKEN}"},),
        None,
    )
    RedactTokensFilter().filter(record)
    assert record.getMessage() == "/?x=[redacted]"


# --- formats, request ids, message content ------------------------------------------------


@pytest.fixture
def log_lines():
    """Lines the console handler would write for the loggers named, in the format asked:
    `lines = log_lines("json", "chatsite.access")`, then `lines()`."""
    import io

    from chatsite.logging import (
        HideMessageContent,
        JsonLinesFormatter,
        RequestIdFilter,
        TextFormatter,
    )

    attached = []

    def attach(fmt: str, *names: str):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonLinesFormatter() if fmt == "json" else TextFormatter())
        for f in (RedactTokensFilter(), RequestIdFilter(), HideMessageContent()):
            handler.addFilter(f)
        for name in names:
            logger = logging.getLogger(name)
            attached.append((logger, handler, logger.level))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        return lambda: out.getvalue().splitlines()

    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


def asgi_get(path: str, query: bytes = b"", headers=()) -> dict[bytes, bytes]:
    """A GET through the site's ASGI application; the response's headers."""
    from chatsite.handlers import ChatsiteASGIHandler

    sent = asgi_request(ChatsiteASGIHandler(), path, query=query, headers=headers)
    return {k.lower(): v for k, v in sent[0]["headers"]} | {b":status": sent[0]["status"]}


@pytest.mark.django_db(transaction=True)
def test_json_lines_carry_the_fields_and_one_request_id_per_request(log_lines):
    """An access line and an application line of one request share its id; the access
    line has method, path, status, duration and bytes."""
    import json

    lines = log_lines("json", "chatsite.access", "django.request")
    headers = asgi_get("/no-such-page/")
    records = [json.loads(line) for line in lines()]
    app, access = records
    assert app["logger"] == "django.request"
    assert app["level"] == "WARNING"
    assert app["message"] == "Not Found: /no-such-page/"
    assert access["logger"] == "chatsite.access"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/no-such-page/", 404)
    assert access["bytes"] > 0
    assert access["duration"] >= 0
    assert {"timestamp", "level", "logger", "message", "request_id"} <= access.keys()
    assert access["timestamp"].endswith("+00:00")
    # One id: generated, logged on both lines, echoed to the client.
    assert app["request_id"] == access["request_id"] == headers[b"x-request-id"].decode()
    assert len(access["request_id"]) == 32


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param(b"req-42.abc:1", True, id="well-formed"),
        pytest.param(b"a b", False, id="space"),
        pytest.param(b"x" * 200, False, id="too-long"),
        pytest.param(b'"quoted"', False, id="quote"),
    ],
)
def test_the_proxys_request_id_is_kept_if_well_formed(log_lines, sent, kept):
    import json

    lines = log_lines("json", "chatsite.access")
    echoed = asgi_get("/no-such-page/", headers=[(b"x-request-id", sent)])[b"x-request-id"]
    assert (echoed == sent) is kept
    assert json.loads(lines()[0])["request_id"] == echoed.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_stream_tokens_never_reach_the_log_in_either_format(log_lines, fmt):
    """The access line's path and message, and an application line with a token in its
    message or its traceback, are redacted in JSON as in text."""
    lines = log_lines(fmt, "chatsite.access", "django.request", "chat.test")
    asgi_get("/stream/conversations/1/", query=f"x=1&%74oken={TOKEN}".encode())
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logging.getLogger("chat.test").exception("while reading /s/?token=%s", TOKEN)
    text = "\n".join(lines())
    assert TOKEN not in text
    assert TOKEN.split(".")[2] not in text
    assert "/stream/conversations/1/?x=1&%74oken=[redacted]" in text
    if fmt == "json":
        import json

        for line in lines():
            json.loads(line)  # redaction never breaks a line's JSON


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_message_content_stays_out_of_the_sql_debug_log(log_lines, conversation, settings, fmt):
    """Django's SQL debug log inlines parameters: without CHAT_LOG_MESSAGE_CONTENT the
    statement is logged with its string literals and parameters hidden."""
    from django.db import connection

    from chat.models import Message

    lines = log_lines(fmt, "django.db.backends")
    secret = "my-secret-plan-4711"
    connection.force_debug_cursor = True
    try:
        Message.objects.create(conversation=conversation, role="user", content=secret)
        settings.CHAT_LOG_MESSAGE_CONTENT = True
        Message.objects.create(conversation=conversation, role="user", content=secret + "-allowed")
    finally:
        connection.force_debug_cursor = False
    text = "\n".join(lines())
    hidden, allowed = text.split(secret + "-allowed", 1)[0], text
    assert "INSERT INTO" in hidden
    assert "chat_message" in hidden
    assert secret not in hidden
    assert "[hidden]" in hidden
    assert secret + "-allowed" in allowed  # the site allowed it


def test_the_log_format_is_text_or_json(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from chatsite.env import log_format

    monkeypatch.delenv("DJANGO_LOG_FORMAT", raising=False)
    assert log_format() == "text"
    monkeypatch.setenv("DJANGO_LOG_FORMAT", "JSON")
    assert log_format() == "json"
    monkeypatch.setenv("DJANGO_LOG_FORMAT", "xml")
    with pytest.raises(ImproperlyConfigured):
        log_format()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("action_logger", "logged"), [(object(), True), (None, False)])
def test_daphnes_access_log_switch_turns_ours_on_or_off(log_lines, action_logger, logged):
    """daphne makes an access logger unless run with `-v 0`: ours logs in its place."""
    from chatsite import accesslog
    from chatsite.server import ChatsiteServer

    lines = log_lines("text", "chatsite.access")
    try:
        server = ChatsiteServer(
            application=None, endpoints=["tcp:port=0"], action_logger=action_logger
        )
        assert server.action_logger is None  # daphne's own never writes
        asgi_get("/no-such-page/")
    finally:
        accesslog.enabled = True
    assert bool(lines()) is logged


def test_djangos_lines_are_written_once_in_the_sites_format():
    """Django's default handler (it prints django's lines again, unformatted, while DEBUG
    is on) is gone: django's records reach the console through the root logger only."""
    from chatsite.logging import JsonLinesFormatter, TextFormatter

    assert logging.getLogger("django").handlers == []
    formats = [h.formatter for h in logging.getLogger().handlers]  # pytest adds its own
    assert any(isinstance(f, TextFormatter | JsonLinesFormatter) for f in formats)


@pytest.mark.django_db(transaction=True)
def test_probes_that_pass_stay_out_of_the_access_log(log_lines, settings, monkeypatch):
    """A load balancer's every-few-seconds probe is not a line while it passes; a failed
    one is."""
    from chat.runs import manager

    lines = log_lines("text", "chatsite.access")
    logging.getLogger("chatsite.access").setLevel(logging.INFO)
    settings.REDIS_URL = None
    asgi_get("/healthz")
    asgi_get("/readyz")
    assert lines() == []
    monkeypatch.setattr(manager, "draining", True)
    asgi_get("/readyz")
    (line,) = lines()
    assert '"GET /readyz" 503' in line
