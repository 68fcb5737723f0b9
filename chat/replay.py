"""The replay buffer: what a (re)connecting client reads to catch up.

The channel layer is at-most-once and keeps nothing, so it can only deliver
what happens while a client listens. The buffer keeps each streaming message's
full text and, once it ends, its final event, for `ttl` seconds; after that the
database has it. Backends are chosen by `settings.CHAT_REPLAY_BUFFER` like the
provider; this module has the in-memory one for a single process.
"""

from __future__ import annotations

import time
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

    def __init__(self, *, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}

    async def start(self, message_id: str, start: dict) -> None:
        self._expire()
        self._entries[message_id] = _Entry(start=start)

    async def append(self, message_id: str, text: str) -> None:
        self._entries[message_id].chunks.append(text)

    async def finish(self, message_id: str, end: dict, error: dict | None) -> None:
        entry = self._entries[message_id]
        entry.end, entry.error = end, error
        entry.expires_at = time.monotonic() + self.ttl

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
        expired = [k for k, e in self._entries.items() if e.expires_at and e.expires_at < now]
        for key in expired:
            del self._entries[key]


@cache
def get_replay_buffer() -> ReplayBuffer:
    config = settings.CHAT_REPLAY_BUFFER
    return import_string(config["BACKEND"])(**config.get("OPTIONS", {}))


@receiver(setting_changed)
def _reset_buffer(*, setting: str, **kwargs) -> None:
    if setting == "CHAT_REPLAY_BUFFER":
        get_replay_buffer.cache_clear()
