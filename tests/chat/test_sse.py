"""The SSE encoder: any text survives a spec-conformant parser intact."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import sse


@pytest.fixture
def parse(parse_sse):
    return parse_sse


TRICKY = [
    "line one\nline two",
    "carriage\rreturn",
    "crlf\r\nending\r\n",
    "\n\nevent: hijack\ndata: {}\n\n",
    "id: 999\nretry: 1\n",
    "data: injected",
    "nul\x00byte",
    "separators\u2028\u2029\x85",
    "emoji 🚀 and é",
    ": looks like a comment",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_text_stays_one_event(text, parse):
    """Newlines, CR, NUL, field names and Unicode separators cannot split or forge an event."""
    frame = sse.event("delta", {"text": text}, id="m:1")
    events = parse(frame)
    assert len(events) == 1
    assert events[0].event == "delta"
    assert events[0].id == "m:1"
    assert json.loads(events[0].data) == {"text": text}


# `parse` is a pure function, so sharing it across generated examples is safe.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(), min_size=1, max_size=5))
def test_arbitrary_text_round_trips_one_event_per_frame(texts, parse):
    """Every frame parses back to exactly one event carrying exactly the text that went in."""
    stream = sse.retry(1000) + b"".join(
        sse.event("delta", {"text": text}, id=f"m:{i}") + sse.HEARTBEAT
        for i, text in enumerate(texts)
    )
    events = [e for e in parse(stream) if e.event == "delta"]
    assert [json.loads(e.data)["text"] for e in events] == texts
    assert [e.id for e in events] == [f"m:{i}" for i in range(len(texts))]


@given(text=st.text())
def test_data_is_a_single_line(text):
    """The data field never contains a character any line splitter would break on."""
    encoded = sse.encode_data({"text": text})
    assert len(encoded.splitlines()) == 1
    assert json.loads(encoded) == {"text": text}


def test_retry_and_heartbeat_frames(parse):
    """The stream opens with a retry hint; heartbeats are comments parsers ignore."""
    assert sse.retry(2500) == b"retry: 2500\n\n"
    assert parse(sse.HEARTBEAT) == []


def test_event_names_and_ids_cannot_carry_line_breaks():
    """Our own fields are checked too: a bad id is a bug, refused loudly."""
    with pytest.raises(ValueError):
        sse.event("delta", {}, id="m:1\nevent: x")
    with pytest.raises(ValueError):
        sse.event("delta\r", {})
