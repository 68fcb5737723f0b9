"""The outbox: run output reaches the buffer before viewers, in flushes, and a Redis
outage is logged once, not once per token."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chat.errors import BackendUnavailable
from chat.events import MessageStarted, TextAppended
from chat.outbox import Outbox
from chat.replay import InMemoryReplayBuffer


class Recorder:
    """A transport that is not in-process (so the outbox flushes) and records publishes."""

    in_process = False
    channel = None

    def __init__(self) -> None:
        self.published: list[dict] = []

    async def publish(self, batches, emitted_at=None):
        self.published.append(batches)

    def deliver_local(
        self, group, events, emitted_at=None
    ):  # pragma: no cover - not used when flushing
        raise AssertionError("an outbox that flushes does not deliver locally")


class FlakyBuffer(InMemoryReplayBuffer):
    """An in-memory buffer that behaves like Redis (flushed), and can be 'down'."""

    in_process = False

    def __init__(self) -> None:
        super().__init__(ttl=60)
        self.down = False
        self.writes = 0

    async def write(self, events):
        if self.down:
            raise BackendUnavailable("Redis at redis://127.0.0.1:1 is unavailable")
        self.writes += 1
        await super().write(events)


def test_many_deltas_of_many_runs_go_out_in_one_flush(settings):
    """Everything emitted within the flush window is one buffer write and one publish,
    grouped by conversation, in order."""
    settings.CHAT_FLUSH_SECONDS = 0.01
    buffer, transport = FlakyBuffer(), Recorder()
    outbox = Outbox(buffer=buffer, transport=transport)

    async def go():
        for run in range(3):
            outbox.emit(f"g{run}", MessageStarted(f"m{run}", {"message": {"id": f"m{run}"}}))
            for i in range(5):
                outbox.emit(f"g{run}", TextAppended(f"m{run}", i, "x"))
        await asyncio.sleep(0.05)
        return await buffer.get("m1")

    snapshot = asyncio.run(go())
    assert buffer.writes == 1
    assert len(transport.published) == 1
    assert sorted(transport.published[0]) == ["g0", "g1", "g2"]
    assert [type(e) for e in transport.published[0]["g1"]] == [MessageStarted] + [TextAppended] * 5
    assert snapshot.text == "xxxxx"


def test_a_redis_outage_is_logged_once_with_a_count_when_it_is_back(settings, caplog):
    """Redis down for 200 deltas: one warning when it goes, one (with the count) when it
    is back, and nothing per token."""
    settings.CHAT_FLUSH_SECONDS = 0.001
    buffer, transport = FlakyBuffer(), Recorder()
    outbox = Outbox(buffer=buffer, transport=transport)

    async def go():
        buffer.down = True
        for i in range(200):
            outbox.emit("g", TextAppended("m", i, "x"))
            if i % 10 == 0:
                await asyncio.sleep(0.002)
        await outbox.flush()
        buffer.down = False
        outbox.emit("g", TextAppended("m", 200, "y"))
        await outbox.flush()

    with caplog.at_level(logging.WARNING, logger="chat.outbox"):
        asyncio.run(go())
    warnings = [r.getMessage() for r in caplog.records if r.name == "chat.outbox"]
    assert len(warnings) == 2, warnings
    assert "cannot reach Redis" in warnings[0]
    assert "Redis is back" in warnings[1] and "(200 events)" in warnings[1]
    assert len(transport.published) == 1  # only what was emitted once it was back


@pytest.mark.parametrize("down", [False, True])
def test_the_buffer_is_written_before_viewers_are_told(down):
    """A flush publishes only after the buffer has the events (a sweeper saves the
    buffer's text if the process dies): when the buffer write fails, nothing is published."""
    buffer, transport = FlakyBuffer(), Recorder()
    buffer.down = down
    outbox = Outbox(buffer=buffer, transport=transport)

    async def go():
        outbox.emit("g", MessageStarted("m", {}))
        await outbox.flush()

    asyncio.run(go())
    assert len(transport.published) == (0 if down else 1)


def test_a_flush_appends_once_per_message_however_deltas_interleave():
    """Three runs' deltas interleaved in one flush become one append per message."""
    from chat.replay import _merge_appends

    events = [TextAppended(f"m{i % 3}", i // 3, "x") for i in range(9)]
    merged = _merge_appends([MessageStarted("m0", {}), *events])
    assert [(type(e), e.message_id) for e in merged] == [
        (MessageStarted, "m0"),
        (TextAppended, "m0"),
        (TextAppended, "m1"),
        (TextAppended, "m2"),
    ]
    assert all(e.text == "xxx" for e in merged[1:])


def test_a_flush_carries_the_wall_time_of_its_oldest_event():
    """What the relay-latency metric measures from: the first event a flush takes, also
    when more are emitted between its timer firing and the flush taking them."""
    import time

    recorder = Recorder()
    outbox = Outbox(buffer=FlakyBuffer(), transport=recorder)
    stamps = []
    published = None

    async def publish(batches, emitted_at=None):
        stamps.append(emitted_at)
        published.set()

    recorder.publish = publish

    async def go():
        nonlocal published
        published = asyncio.Event()
        first = time.time()
        outbox.emit("g", TextAppended("m", 0, "a"))
        await asyncio.sleep(0.03)
        outbox._flush_soon()  # the flush timer fires; its flush has not run yet
        outbox.emit("g", TextAppended("m", 1, "b"))  # (this one starts a new timer)
        await published.wait()
        third = time.time()
        outbox.emit("g", TextAppended("m", 2, "c"))
        await outbox.flush()
        return first, third

    first, third = asyncio.run(go())
    assert first <= stamps[0] < first + 0.02  # a's time, not b's
    assert stamps[1] >= third  # the next flush starts from its own first event
