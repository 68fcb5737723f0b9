"""Where runs put what viewers must get: replay-buffer writes and live events, together.

A run calls `emit(group, event)` for every event of its answer and does not wait.
Within one process the buffer and the fan-out are in memory and the event is
applied at once. With Redis, events wait up to `CHAT_FLUSH_SECONDS` and one
flush sends everything every run of the process emitted meanwhile: the buffer's
writes in one pipeline (an APPEND per message, however many deltas it had), then
every group's events in another (one PUBLISH per conversation). The buffer is
written first, so whatever a viewer has seen, the buffer has (a sweeper saves the
buffer's text if this process dies).

When Redis is unreachable a flush is dropped: streams notice (their quiet check)
and reconnect, and the database checkpoints keep the text. It is logged once per
outage, with a count when Redis is back, not once per token.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .conf import chat_settings
from .errors import BackendUnavailable
from .events import StreamEvent
from .fanout import Fanout, fanout
from .replay import ReplayBuffer, get_replay_buffer

logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, *, buffer: ReplayBuffer | None = None, transport: Fanout = fanout) -> None:
        self._buffer = buffer
        self.transport = transport
        self._events: list[tuple[str, StreamEvent]] = []
        # Done when the queued events have been sent (or dropped): what `emit_and_flush`
        # waits for.
        self._sent: asyncio.Future | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes: set[asyncio.Task] = set()  # held, so the loop cannot drop them
        self._first_emitted_at: float | None = None  # wall time of the first queued event
        self.failed_flushes = 0
        self.dropped_events = 0

    @property
    def buffer(self) -> ReplayBuffer:
        return self._buffer if self._buffer is not None else get_replay_buffer()

    @property
    def immediate(self) -> bool:
        """In-process buffer and layer: events are applied at once, nothing to flush."""
        return self.buffer.in_process and self.transport.in_process

    def emit(self, group: str, event: StreamEvent) -> None:
        """Queue `event` for the buffer and the group's streams (call on the event loop)."""
        if self.immediate:
            self.buffer.write_now((event,))
            self.transport.deliver_local(group, [event])
            return
        self._events.append((group, event))
        if self._first_emitted_at is None:  # the oldest event the next flush takes
            self._first_emitted_at = time.time()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a server has one loop; only tests run several in turn
            self._loop, self._handle, self._sent = loop, None, None
            self._lock = asyncio.Lock()
        if self._handle is None:
            self._handle = loop.call_later(chat_settings.FLUSH_SECONDS, self._flush_soon)

    async def emit_and_flush(self, group: str, event: StreamEvent) -> None:
        """Emit `event` and wait until the flush that carries it has been sent.

        It rides with the next scheduled flush rather than forcing one of its own:
        when a hundred answers end at once, that is one flush, not a hundred in a
        queue that every other run's deltas would wait behind.
        """
        self.emit(group, event)
        if self.immediate:
            return
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._sent)

    def _flush_soon(self) -> None:
        self._handle = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Send what is queued: the buffer's writes, then the live events."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._loop is not asyncio.get_running_loop():
            self._loop, self._lock = asyncio.get_running_loop(), asyncio.Lock()
        # One flush at a time, in order: a message's events never overtake each other.
        async with self._lock:
            events, self._events = self._events, []
            sent, self._sent = self._sent, None
            emitted_at, self._first_emitted_at = self._first_emitted_at, None
            try:
                if events:
                    await self._send(events, emitted_at)
            finally:
                if sent is not None and not sent.done():
                    sent.set_result(None)

    async def _send(
        self, events: list[tuple[str, StreamEvent]], emitted_at: float | None = None
    ) -> None:
        batches: dict[str, list[StreamEvent]] = {}
        for group, event in events:
            batches.setdefault(group, []).append(event)
        try:
            await self.buffer.write([event for _, event in events])
            await self.transport.publish(batches, emitted_at)
        except BackendUnavailable as exc:
            self._failed(len(events), exc)
        else:
            self._recovered()

    def _failed(self, count: int, exc: Exception) -> None:
        if not self.failed_flushes:
            logger.warning("run output cannot reach Redis; dropping it until it is back: %s", exc)
        self.failed_flushes += 1
        self.dropped_events += count

    def _recovered(self) -> None:
        if self.failed_flushes:
            logger.warning(
                "Redis is back: %d flushes (%d events) were dropped while it was away",
                self.failed_flushes,
                self.dropped_events,
            )
            self.failed_flushes = self.dropped_events = 0


outbox = Outbox()
