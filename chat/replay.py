"""The replay buffer: what a (re)connecting client reads to catch up.

The channel layer is at-most-once and keeps nothing, so it can only deliver
what happens while a client listens. The buffer keeps each streaming message's
full text and, once it ends, its final event, for `ttl` seconds; after that the
database has it. Backends are chosen by `CHAT_REPLAY_BUFFER` (chat/backends.py):
in memory for a single process, Redis when several processes share a site (any
process can then serve any stream).

The buffer is written with the same events runs publish (`write`), in the order
they happened, so a flush of run output is one call (one pipeline with Redis).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .backends import Backend
from .conf import chat_settings
from .events import MessageEnded, MessageStarted, StreamEvent, TextAppended
from .redis import RedisBackend


@dataclass
class Snapshot:
    """A message as the buffer knows it: its start event, text so far, and end if ended."""

    start: dict
    text: str
    end: dict | None = None
    error: dict | None = None


class ReplayBuffer(Protocol):
    # True: writes happen at once and cannot fail (no flush, no timeout needed).
    in_process: bool

    async def write(self, events: Iterable[StreamEvent]) -> None: ...
    async def get(self, message_id: str) -> Snapshot | None: ...


class _Convenience:
    """One event at a time (tests, the sweeper): each is a one-event `write`."""

    async def start(self, message_id: str, start: dict) -> None:
        await self.write([MessageStarted(message_id, start)])

    async def append(self, message_id: str, text: str) -> None:
        await self.write([TextAppended(message_id, -1, text)])

    async def finish(self, message_id: str, end: dict, error: dict | None) -> None:
        await self.write([MessageEnded(message_id, -1, end, error)])


@dataclass
class _Entry:
    start: dict
    chunks: list[str] = field(default_factory=list)
    end: dict | None = None
    error: dict | None = None
    expires_at: float | None = None


class InMemoryReplayBuffer(_Convenience):
    """Per-process buffer for the embedded default (one process, no Redis)."""

    in_process = True

    def __init__(self, *, ttl: float | None = None) -> None:
        self.ttl = chat_settings.REPLAY_TTL_SECONDS if ttl is None else ttl
        self._entries: dict[str, _Entry] = {}
        # Ended messages in the order they expire (same ttl for all): expiring is
        # popping from the left, not a scan of every entry.
        self._expiry: deque[tuple[float, str]] = deque()

    async def write(self, events: Iterable[StreamEvent]) -> None:
        self.write_now(events)

    def write_now(self, events: Iterable[StreamEvent]) -> None:
        for event in events:
            if type(event) is TextAppended:
                entry = self._entries.get(event.message_id)
                if entry is not None:
                    entry.chunks.append(event.text)
            elif type(event) is MessageStarted:
                self._expire()
                self._entries[event.message_id] = _Entry(start=event.data)
            elif type(event) is MessageEnded:
                entry = self._entries.get(event.message_id)
                if entry is None:
                    continue
                entry.end, entry.error = event.data, event.error
                entry.expires_at = time.monotonic() + self.ttl
                self._expiry.append((entry.expires_at, event.message_id))

    async def get(self, message_id: str) -> Snapshot | None:
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        text = "".join(entry.chunks)
        # Join once and keep it: later appends and reads start from one chunk.
        entry.chunks[:] = [text] if text else []
        return Snapshot(start=entry.start, text=text, end=entry.end, error=entry.error)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._expiry and self._expiry[0][0] < now:
            _, message_id = self._expiry.popleft()
            entry = self._entries.get(message_id)
            # A message restarted since (a new `start`) is not expired by its old end.
            if entry is not None and entry.expires_at is not None and entry.expires_at < now:
                del self._entries[message_id]


class RedisReplayBuffer(_Convenience, RedisBackend):
    """Shared buffer: a string of text (APPEND per flush) and a hash of events per message.

    Keys live `streaming_ttl` while the message streams (a safety net if its run
    dies without finishing) and `ttl` after it ends.
    """

    in_process = False

    def __init__(
        self,
        *,
        url: str,
        ttl: float | None = None,
        streaming_ttl: float = 86_400.0,
        prefix: str = "chat:replay:",
    ) -> None:
        super().__init__(url=url)
        self.ttl = int(chat_settings.REPLAY_TTL_SECONDS if ttl is None else ttl)
        self.streaming_ttl = int(streaming_ttl)
        self.prefix = prefix

    def _keys(self, message_id: str) -> tuple[str, str]:
        return f"{self.prefix}{message_id}", f"{self.prefix}{message_id}:text"

    async def write(self, events: Iterable[StreamEvent]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for event in _merge_appends(events):
            meta, text = self._keys(event.message_id)
            if type(event) is TextAppended:
                pipe.append(text, event.text)
            elif type(event) is MessageStarted:
                pipe.delete(meta)
                pipe.hset(meta, "start", json.dumps(event.data))
                pipe.expire(meta, self.streaming_ttl)
                # An empty text with its expiry: later APPENDs keep the expiry.
                pipe.set(text, b"", ex=self.streaming_ttl)
            elif type(event) is MessageEnded:
                fields = {"end": json.dumps(event.data)}
                if event.error is not None:
                    fields["error"] = json.dumps(event.error)
                pipe.hset(meta, mapping=fields)
                pipe.expire(meta, self.ttl)
                pipe.expire(text, self.ttl)
        if len(pipe):
            await self.run(pipe.execute())

    async def get(self, message_id: str) -> Snapshot | None:
        meta, text = self._keys(message_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(meta)
        pipe.get(text)
        fields, raw_text = await self.run(pipe.execute())
        if not fields or b"start" not in fields:
            return None

        def field(name: bytes) -> dict | None:
            return json.loads(fields[name]) if name in fields else None

        return Snapshot(
            start=field(b"start"),
            text=raw_text.decode() if raw_text else "",
            end=field(b"end"),
            error=field(b"error"),
        )

    async def scan(self, cursor: int = 0, count: int = 500) -> tuple[int, set[str]]:
        """One page of the message ids that have buffer keys: (next cursor, ids); the
        cursor is 0 again when the scan is done. SCAN, never KEYS: a big keyspace is walked
        a page at a time, not in one call that blocks Redis."""
        match = _glob_escape(self.prefix) + "*"
        cursor, keys = await self.run(self.redis.scan(cursor, match=match, count=count))
        start = len(self.prefix)
        ids = {key.decode()[start:].removesuffix(":text") for key in keys}
        return cursor, ids

    async def discard(self, message_ids: Iterable[str]) -> int:
        """Delete these messages' buffers (both keys); how many keys were deleted."""
        keys = [key for message_id in message_ids for key in self._keys(message_id)]
        if not keys:
            return 0
        return await self.run(self.redis.delete(*keys))


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _merge_appends(events: Iterable[StreamEvent]) -> list[StreamEvent]:
    """One append per message per flush, however its deltas interleave with other
    messages' (writes to different messages commute; a message's own order is kept)."""
    merged: list[StreamEvent] = []
    pending: dict[str, list[TextAppended]] = {}  # message id -> its appends not yet placed

    def place(message_id: str) -> None:
        appends = pending.pop(message_id, None)
        if appends:
            text = "".join(a.text for a in appends)
            merged.append(TextAppended(message_id, appends[0].start, text))

    for event in events:
        if type(event) is TextAppended:
            pending.setdefault(event.message_id, []).append(event)
        else:
            place(event.message_id)
            merged.append(event)
    for message_id in list(pending):
        place(message_id)
    return merged


get_replay_buffer: Backend[ReplayBuffer] = Backend("REPLAY_BUFFER")
