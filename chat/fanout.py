"""One channel-layer subscription per process, fanned out to its local streams.

Every process has one channel on the layer. When the first local stream of a
conversation opens, that channel joins the conversation's group; events that
arrive are handed to each local stream's queue. So a token costs one layer
message per *process* watching the conversation, not one per open stream,
and an open stream costs a queue, not a blocking receive on Redis.

The same channel is the process's control address: other processes send
`run.cancel` to it (see `runs.request_cancel`), and run leases name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from . import runs

logger = logging.getLogger(__name__)

# Put in a stream's queue when the process can no longer feed it (the layer
# failed, or the server is shutting down): the stream ends and its client reconnects.
CLOSED = None
# Groups a process has left stay joined this long, in case a stream comes right back.
_LEAVE_AFTER_SECONDS = 30.0
# Re-join watched groups well before channels_redis's group expiry (a day).
_REJOIN_EVERY_SECONDS = 3600.0


class Fanout:
    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self.channel: str | None = None
        self._queues: dict[str, set[asyncio.Queue]] = {}  # group -> local stream queues
        self._joined: dict[str, asyncio.Future] = {}  # group -> done when the channel is in it
        self._lock = asyncio.Lock()
        self._ready: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> str:
        """Open this process's channel and start receiving (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A server has one loop for its life; only tests run several in turn.
            self._reset(loop)
        if self._task is None:
            self._ready = loop.create_future()
            self._task = loop.create_task(self._receive_forever(), name="chat-fanout")
        return await asyncio.shield(self._ready)

    async def subscribe(self, group: str) -> asyncio.Queue:
        """A queue of this group's events; the group is joined before this returns."""
        await self.start()
        queue: asyncio.Queue = asyncio.Queue()
        async with self._lock:
            self._queues.setdefault(group, set()).add(queue)
            joined = self._joined.get(group)
            if joined is None:
                joined = self._joined[group] = asyncio.get_running_loop().create_future()
                try:
                    await get_channel_layer().group_add(group, self.channel)
                except BaseException as exc:
                    self._queues[group].discard(queue)
                    del self._joined[group]
                    joined.cancel()
                    raise exc
                joined.set_result(True)
        await asyncio.shield(joined)
        return queue

    async def publish(self, group: str, message: dict) -> None:
        """Send `message` to every stream of `group`, in every process of the site."""
        layer = get_channel_layer()
        if isinstance(layer, InMemoryChannelLayer):
            # This process is the whole site: no layer round trip (and none of
            # the in-memory layer's per-receive expiry scan over every group).
            self._dispatch(message)
        else:
            async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                await layer.group_send(group, message)

    def unsubscribe(self, group: str, queue: asyncio.Queue) -> None:
        queues = self._queues.get(group)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            asyncio.get_running_loop().call_later(
                _LEAVE_AFTER_SECONDS, lambda: asyncio.ensure_future(self._leave_if_unused(group))
            )

    def close_all(self) -> None:
        """End every local stream (their clients reconnect, here or elsewhere)."""
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(CLOSED)
        self._queues.clear()
        self._joined.clear()

    @property
    def stream_count(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def _leave_if_unused(self, group: str) -> None:
        async with self._lock:
            if self._queues.get(group) or group not in self._joined:
                return
            self._queues.pop(group, None)
            del self._joined[group]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                    await get_channel_layer().group_discard(group, self.channel)

    async def _receive_forever(self) -> None:
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.channel = await layer.new_channel()
                if not self._ready.done():
                    self._ready.set_result(self.channel)
                rejoin_at = loop.time() + _REJOIN_EVERY_SECONDS
                while True:
                    message = await layer.receive(self.channel)
                    self._dispatch(message)
                    if loop.time() > rejoin_at:
                        rejoin_at = loop.time() + _REJOIN_EVERY_SECONDS
                        for group in list(self._joined):
                            await layer.group_add(group, self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The layer failed (Redis away). Our group memberships may be gone
                # with it, so end local streams; clients reconnect and resubscribe.
                logger.warning(
                    "fan-out channel failed, closing %d streams: %r", self.stream_count, exc
                )
                self.close_all()
                await asyncio.sleep(1.0)

    def _dispatch(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "chat.event":
            for queue in self._queues.get(message["group"], ()):
                queue.put_nowait(message)
        elif kind == "run.cancel":
            runs.cancel_local(message["message_id"], runs.CANCELLED_BY_USER)


fanout = Fanout()
