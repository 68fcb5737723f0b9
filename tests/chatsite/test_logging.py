"""Token redaction (chatsite/logging.py): on the decoded query, written over the raw line."""

from __future__ import annotations

import logging

import pytest

from chatsite.logging import RedactTokensFilter, redact

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
