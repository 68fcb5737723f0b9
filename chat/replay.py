"""The replay buffer: what a (re)connecting client reads to catch up.

The channel layer is at-most-once and keeps nothing, so it can only deliver
what happens while a client listens. The buffer keeps each streaming message's
full text and, once it ends, its final event, for `ttl` seconds; after that the
database has it. Backends are chosen by `settings.CHAT_REPLAY_BUFFER` like the
provider: in memory for a single process, Redis when several processes share a
site (any process can then serve any stream).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string


@dataclass
class Snapshot:
    """A message as the buffer knows it: its start event, text so far, and end if ended."""

    start: dict
    text: str
    end: dict | None = None
    error: dict | None = None


class ReplayBuffer(Protocol):
    in_process: bool  # True: cannot stall or fail on the network (no timeout needed)

    async def start(self, message_id: str, start: dict) -> None: ...
    async def append(self, message_id: str, text: str) -> None: ...
    async def finish(self, message_id: str, end: dict, error: dict | None) -> None: ...
    async def get(self, message_id: str) -> Snapshot | None: ...


@dataclass
class _Entry:
    start: dict
    chunks: list[str] = field(default_factory=list)
    end: dict | None = None
    error: dict | None = None
    expires_at: float | None = None


class InMemoryReplayBuffer:
    """Per-process buffer for the embedded default (one process, no Redis)."""

    in_process = True

    def __init__(self, *, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        # Ended messages in the order they expire (same ttl for all): expiring is
        # popping from the left, not a scan of every entry.
        self._expiry: deque[tuple[float, str]] = deque()

    async def start(self, message_id: str, start: dict) -> None:
        self._expire()
        self._entries[message_id] = _Entry(start=start)

    async def append(self, message_id: str, text: str) -> None:
        self._entries[message_id].chunks.append(text)

    async def finish(self, message_id: str, end: dict, error: dict | None) -> None:
        entry = self._entries[message_id]
        entry.end, entry.error = end, error
        entry.expires_at = time.monotonic() + self.ttl
        self._expiry.append((entry.expires_at, message_id))

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


class RedisReplayBuffer:
    """Shared buffer: a string of text (APPEND per delta) and a hash of events per message.

    Keys live `streaming_ttl` while the message streams (a safety net if its run
    dies without finishing) and `ttl` after it ends.
    """

    in_process = False

    def __init__(
        self,
        *,
        url: str,
        ttl: float = 300.0,
        streaming_ttl: float = 86_400.0,
        prefix: str = "chat:replay:",
    ) -> None:
        from redis import asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url)
        self.ttl = int(ttl)
        self.streaming_ttl = int(streaming_ttl)
        self.prefix = prefix

    def _keys(self, message_id: str) -> tuple[str, str]:
        return f"{self.prefix}{message_id}", f"{self.prefix}{message_id}:text"

    async def start(self, message_id: str, start: dict) -> None:
        meta, text = self._keys(message_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(meta, text)
            pipe.hset(meta, "start", json.dumps(start))
            pipe.expire(meta, self.streaming_ttl)
            await pipe.execute()

    async def append(self, message_id: str, text: str) -> None:
        _, text_key = self._keys(message_id)
        # APPEND creates the key without a TTL: give it one the first time.
        if await self.redis.append(text_key, text.encode()) == len(text.encode()):
            await self.redis.expire(text_key, self.streaming_ttl)

    async def finish(self, message_id: str, end: dict, error: dict | None) -> None:
        meta, text = self._keys(message_id)
        fields = {"end": json.dumps(end)}
        if error is not None:
            fields["error"] = json.dumps(error)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(meta, mapping=fields)
            pipe.expire(meta, self.ttl)
            pipe.expire(text, self.ttl)
            await pipe.execute()

    async def get(self, message_id: str) -> Snapshot | None:
        meta, text = self._keys(message_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(meta)
            pipe.get(text)
            fields, raw_text = await pipe.execute()
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


@cache
def get_replay_buffer() -> ReplayBuffer:
    config = settings.CHAT_REPLAY_BUFFER
    return import_string(config["BACKEND"])(**config.get("OPTIONS", {}))


@receiver(setting_changed)
def _reset_buffer(*, setting: str, **kwargs) -> None:
    if setting == "CHAT_REPLAY_BUFFER":
        get_replay_buffer.cache_clear()
