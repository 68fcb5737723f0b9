"""Per-user caps on open SSE streams, shared by every process when Redis is there.

A slot is a stream id with an expiry time; open streams refresh theirs at each
heartbeat, and close them when they end. A process that dies without closing
its streams leaves slots that simply expire.
"""

from __future__ import annotations

import time

from .backends import Backend
from .conf import chat_settings
from .redis import RedisBackend

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _slot_ttl() -> float:
    return 2 * chat_settings.SSE_HEARTBEAT_SECONDS + 5


class InMemoryStreamSlots:
    def __init__(self) -> None:
        self._slots: dict[str, dict[str, float]] = {}

    async def acquire(self, user_id: str, stream_id: str, limit: int) -> bool:
        now = time.monotonic()
        slots = {k: v for k, v in self._slots.get(user_id, {}).items() if v > now}
        if len(slots) >= limit:
            self._slots[user_id] = slots
            return False
        slots[stream_id] = now + _slot_ttl()
        self._slots[user_id] = slots
        return True

    async def refresh(self, user_id: str, stream_id: str) -> None:
        if stream_id in self._slots.get(user_id, {}):
            self._slots[user_id][stream_id] = time.monotonic() + _slot_ttl()

    async def release(self, user_id: str, stream_id: str) -> None:
        self._slots.get(user_id, {}).pop(stream_id, None)


class RedisStreamSlots(RedisBackend):
    def __init__(self, *, url: str) -> None:
        super().__init__(url=url)
        self._acquire = self.redis.register_script(_ACQUIRE)

    @staticmethod
    def _key(user_id: str) -> str:
        return f"chat:streams:{user_id}"

    async def acquire(self, user_id: str, stream_id: str, limit: int) -> bool:
        now = time.time()
        ttl = _slot_ttl()
        args = [now, now + ttl, limit, stream_id, int(ttl) + 1]
        return bool(await self.run(self._acquire(keys=[self._key(user_id)], args=args)))

    async def refresh(self, user_id: str, stream_id: str) -> None:
        expires = time.time() + _slot_ttl()
        await self.run(self.redis.zadd(self._key(user_id), {stream_id: expires}, xx=True))

    async def release(self, user_id: str, stream_id: str) -> None:
        await self.run(self.redis.zrem(self._key(user_id), stream_id))


get_stream_slots: Backend[InMemoryStreamSlots | RedisStreamSlots] = Backend("STREAM_SLOTS")
