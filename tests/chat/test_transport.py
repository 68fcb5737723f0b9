"""The event-stream watch both servers use: when it drops a stream, and what it logs.

The servers themselves (daphne and uvicorn, real sockets and real slow clients) are
tested end to end in tests/e2e/test_transport.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from chatsite.transport import EventStream, is_event_stream, request_line

DROPPED = "event stream dropped"


def watched(**kwargs) -> tuple[EventStream, list[int]]:
    aborts: list[int] = []
    stream = EventStream(
        sock=None,
        timeout=kwargs.pop("timeout", 0.05),
        abort=lambda: aborts.append(1),
        client="203.0.113.7:51812",
        request=request_line("GET", "/stream/conversations/c/", b"token=secret"),
    )
    return stream, aborts


def drops(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(DROPPED)]


def test_a_stream_whose_writes_wait_a_heartbeat_is_aborted_once_with_one_log_line(caplog):
    async def scenario():
        stream, aborts = watched()
        stream.paused()
        stream.paused()  # the buffer filled again: still one watch
        for _ in range(100):
            if aborts:
                break
            await asyncio.sleep(0.05)
        stream.closed()  # the abort ends the connection
        return aborts

    with caplog.at_level(logging.WARNING, logger="chatsite.transport"):
        assert asyncio.run(scenario()) == [1]
    [line] = drops(caplog)
    assert line == (
        "event stream dropped: 203.0.113.7:51812 GET /stream/conversations/c/?token=[redacted]:"
        " its writes waited 0.05 s (the client reads too slowly, or not at all)"
    )


def test_a_stream_whose_writes_drain_in_time_is_kept(caplog):
    async def scenario():
        stream, aborts = watched()
        stream.paused()
        stream.resumed()
        await asyncio.sleep(0.2)  # four times the timeout: its timer was cancelled
        stream.closed()
        return aborts

    with caplog.at_level(logging.WARNING, logger="chatsite.transport"):
        assert asyncio.run(scenario()) == []
    assert drops(caplog) == []


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (TimeoutError(110, "Connection timed out"), True),  # TCP_USER_TIMEOUT
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (None, False),  # the client closed it
    ],
)
def test_only_a_connection_the_kernel_gave_up_on_counts_as_dropped(caplog, error, logged):
    async def scenario():
        stream, _ = watched(timeout=15)
        stream.closed(error)
        stream.closed(error)  # a server may report the end twice

    with caplog.at_level(logging.WARNING, logger="chatsite.transport"):
        asyncio.run(scenario())
    expected = ["the client took nothing for 15 s (gone, or not reading)"] if logged else []
    assert [line.rsplit(": ", 1)[1] for line in drops(caplog)] == expected


def test_event_streams_are_told_by_their_content_type():
    assert is_event_stream([(b"Content-Type", b"text/event-stream; charset=utf-8")])
    assert is_event_stream([(b"x-accel-buffering", b"no"), (b"content-type", b"TEXT/EVENT-STREAM")])
    assert not is_event_stream([(b"content-type", b"application/json")])
    assert not is_event_stream([])
