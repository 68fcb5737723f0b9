"""One channel-layer subscription per process, fanned out to its local streams.

Pure transport: it carries batches of stream events (chat/events.py) between
processes and hands control messages to whoever registered for them (the run
manager); it knows nothing of runs.

Every process has one channel on the layer. When the first local stream of a
conversation opens, that channel joins the conversation's group; batches that
arrive are handed to each local stream's queue. So an event costs one layer
message per *process* watching the conversation, not one per open stream, and
an open stream costs a queue, not a blocking receive on Redis.

With Redis the layer is channels_redis's pub/sub layer: a group is a Redis
pub/sub channel. Publishing goes around the layer's one-PUBLISH-per-call API:
`publish` sends every group's batch of a flush in one pipeline, encoded and
addressed exactly as the layer's own `group_send` would (its serializer, its
`<prefix>__group__<group>` channel names), so the layer's subscribers receive
them as usual. With the in-memory layer the process is the whole site, and a
batch goes straight to the local queues.

The same channel is the process's control address: other processes send
control messages (`run.stop`) to it, and run leases name it. It is also in one
group every process joins, so a control message can reach them all at once
(`broadcast`: "re-check user X's streams", see chat/access.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from . import metrics
from .conf import chat_settings
from .errors import BackendUnavailable
from .events import StreamEvent, from_wire, to_wire
from .redis import RedisBackend

logger = logging.getLogger(__name__)

# Put in a stream's queue when the process can no longer feed it (the layer
# failed, or the server is shutting down): the stream ends and its client reconnects.
CLOSED = None
# Groups a process has left stay joined this long, in case a stream comes right back.
_LEAVE_AFTER_SECONDS = 30.0
# Re-join watched groups well before channels_redis's group expiry (a day).
_REJOIN_EVERY_SECONDS = 3600.0
_EVENTS = "chat.events"
# Every process's channel is in this group: `broadcast` reaches them all.
_PROCESSES = "chat.processes"


class Batch(list):
    """What a stream's queue holds: one process's events for the group, from one flush,
    stamped with the wall time the first of them was emitted (for the relay-latency
    metric; None when not known)."""

    __slots__ = ("emitted_at",)

    def __init__(self, events, emitted_at: float | None) -> None:
        super().__init__(events)
        self.emitted_at = emitted_at


def process_prefix() -> str:
    """The start of this process's channel name: `specific.<host>.<pid>.` — run leases
    name the channel, so the admin can say which machine and process owns a run.

    The host is cut to what a channel name may hold (letters, digits, hyphens; channel
    names are limited to 100 characters, and the layer adds 32 hex digits).
    """
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"specific.{host}.{os.getpid()}."


_PROCESS = re.compile(r"specific\.([A-Za-z0-9-]+)\.(\d+)\.")


def channel_process(channel: str) -> tuple[str, int] | None:
    """The (host, pid) a channel made with `process_prefix` names; None for any other."""
    match = _PROCESS.search(channel)
    return (match[1], int(match[2])) if match else None


class Fanout:
    def __init__(self) -> None:
        self._control_handlers: dict[str, Callable[[dict], None]] = {}
        self._redis: RedisBackend | None = None
        self._held: set[asyncio.Task] = set()
        self._reset(None)

    def _reset(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self.channel: str | None = None
        self._queues: dict[str, set[asyncio.Queue]] = {}  # group -> local stream queues
        self._joined: dict[str, asyncio.Future] = {}  # group -> done when the channel is in it
        self._lock = asyncio.Lock()
        self._ready: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._redis = None

    def on_control(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Register the one receiver of control messages of type `kind` sent to this process."""
        self._control_handlers[kind] = handler

    @property
    def in_process(self) -> bool:
        """True when this process is the whole site (the in-memory layer)."""
        return isinstance(get_channel_layer(), InMemoryChannelLayer)

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
        """A queue of this group's event batches; the group is joined before this returns."""
        await self.start()
        queue: asyncio.Queue = asyncio.Queue()
        async with self._lock:
            self._queues.setdefault(group, set()).add(queue)
            joined = self._joined.get(group)
            if joined is None:
                joined = self._joined[group] = asyncio.get_running_loop().create_future()
                try:
                    await self._layer_call(get_channel_layer().group_add(group, self.channel))
                except BaseException as exc:
                    self._queues[group].discard(queue)
                    del self._joined[group]
                    joined.cancel()
                    raise exc
                joined.set_result(True)
        await asyncio.shield(joined)
        return queue

    async def publish(
        self, batches: dict[str, list[StreamEvent]], emitted_at: float | None = None
    ) -> None:
        """Send each group's events to its streams in every process: one round trip.

        `emitted_at`: the wall time the first of them was emitted (travels with them)."""
        if self.in_process:
            for group, events in batches.items():
                self.deliver_local(group, events, emitted_at)
            return
        layer = get_channel_layer()
        redis = self._redis_backend()
        pipe = redis.redis.pipeline(transaction=False)
        for group, events in batches.items():
            message = {"type": _EVENTS, "group": group, "events": [to_wire(e) for e in events]}
            if emitted_at is not None:
                message["emitted_at"] = emitted_at
            pipe.publish(_group_channel(layer, group), layer.serialize(message))
        await redis.run(pipe.execute())

    async def send_control(self, channel: str, message: dict) -> None:
        """Send a control message to one process's channel (its run leases name it)."""
        await self._layer_call(get_channel_layer().send(channel, message))

    async def broadcast(self, message: dict) -> None:
        """Send a control message to every process of the site, this one included."""
        if self.in_process:
            self._dispatch(message)
            return
        await self._layer_call(get_channel_layer().group_send(_PROCESSES, message))

    def broadcast_soon(self, message: dict) -> None:
        """`broadcast` from sync code on any thread (a request's, the admin's, a command's).

        In a server the message is handed to its loop without waiting: a request that
        changed a user need not wait for Redis. Without a server loop (a management
        command, a shell) this process has no streams; on a Redis site the message is
        published before this returns, and with the in-memory layer there is no other
        process to tell.
        """
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._broadcast_in_background, message)
        elif not self.in_process:
            try:
                async_to_sync(self.broadcast)(message)
            except (BackendUnavailable, RuntimeError) as exc:
                # RuntimeError: called from inside a foreign event loop. Either way each
                # process's periodic check (chat/access.py) still finds the change.
                logger.warning("broadcast of %s failed: %r", message.get("type"), exc)

    def _broadcast_in_background(self, message: dict) -> None:
        async def send() -> None:
            try:
                await self.broadcast(message)
            except BackendUnavailable as exc:
                logger.warning("broadcast of %s failed: %r", message.get("type"), exc)

        task = asyncio.ensure_future(send())
        self._held.add(task)  # a task nobody holds may be dropped by the loop
        task.add_done_callback(self._held.discard)

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

    def _redis_backend(self) -> RedisBackend:
        if self._redis is None:
            self._redis = RedisBackend(url=settings.REDIS_URL)
        return self._redis

    async def _layer_call(self, operation) -> None:
        if self.in_process:
            await operation
            return
        try:
            async with asyncio.timeout(chat_settings.REDIS_TIMEOUT_SECONDS):
                await operation
        except Exception as exc:
            raise BackendUnavailable(f"channel layer unavailable: {exc!r}") from exc

    async def _leave_if_unused(self, group: str) -> None:
        async with self._lock:
            if self._queues.get(group) or group not in self._joined:
                return
            self._queues.pop(group, None)
            del self._joined[group]
            with contextlib.suppress(BackendUnavailable):
                await self._layer_call(get_channel_layer().group_discard(group, self.channel))

    async def _receive_forever(self) -> None:
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.channel = await layer.new_channel(prefix=process_prefix())
                if not self.in_process:
                    await layer.group_add(_PROCESSES, self.channel)
                if not self._ready.done():
                    self._ready.set_result(self.channel)
                rejoin_at = loop.time() + _REJOIN_EVERY_SECONDS
                while True:
                    self._dispatch(await layer.receive(self.channel))
                    if loop.time() > rejoin_at:
                        rejoin_at = loop.time() + _REJOIN_EVERY_SECONDS
                        for group in [_PROCESSES, *self._joined]:
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
        if kind == _EVENTS:
            self.deliver_local(
                message["group"],
                [from_wire(e) for e in message["events"]],
                message.get("emitted_at"),
            )
        elif (handler := self._control_handlers.get(kind)) is not None:
            handler(message)

    def deliver_local(
        self, group: str, events: list[StreamEvent], emitted_at: float | None = None
    ) -> None:
        queues = self._queues.get(group)
        if queues:
            batch = Batch(events, time.time() if emitted_at is None else emitted_at)
            for queue in queues:
                queue.put_nowait(batch)


def _group_channel(layer, group: str) -> str:
    # As channels_redis's RedisPubSubLoopLayer._get_group_channel_name (4.3) names it;
    # tests/e2e/test_cluster.py breaks if the two ever differ.
    return f"{layer.prefix}__group__{group}"


fanout = Fanout()
metrics.measure_open_streams(lambda: fanout.stream_count)
