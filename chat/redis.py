"""What every Redis backend of the chat shares: a client, and one way to fail.

Backends own their timeouts: each operation gives up after
`CHAT_REDIS_TIMEOUT_SECONDS`, and any Redis or network failure (or the timeout)
is raised as `BackendUnavailable`, the one error callers handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .conf import chat_settings
from .errors import BackendUnavailable

T = TypeVar("T")


class RedisBackend:
    def __init__(self, *, url: str, timeout: float | None = None) -> None:
        from redis import asyncio as aioredis

        self.url = url
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=2)
        self.timeout = chat_settings.REDIS_TIMEOUT_SECONDS if timeout is None else timeout

    async def run(self, operation: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} is unavailable: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the client's connections (a backend made for one piece of work)."""
        await self.redis.aclose()
