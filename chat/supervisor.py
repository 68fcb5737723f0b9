"""Keeping every run accountable, in every process.

Each process runs one supervisor. It

* renews the **leases** of the runs this process owns (one UPDATE per tick);
* **sweeps**: an active message whose lease has expired belongs to a process
  that died (SIGKILL, OOM, a lost machine). The sweeper ends it `interrupted`
  (or `cancelled` if a stop was asked), keeps the longest text it can find —
  the replay buffer's, else the last checkpoint — and tells viewers;
* names the process's fan-out channel (`chat/fanout.py`) as the lease's
  `run_owner`, so a stop pressed on any process reaches the run's owner at
  once; the `cancel_requested` flag, checked every tick, covers a lost
  control message;
* **drains** on shutdown: no new runs, running ones get `drain` seconds to
  finish, the rest are interrupted, and open streams are closed so browsers
  reconnect to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import events, runs
from .fanout import fanout
from .models import Message
from .providers import get_provider
from .replay import get_replay_buffer

logger = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self.draining = False
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the supervisor (and every run of this process) lives on."""
        return self._loop

    @property
    def channel(self) -> str | None:
        return fanout.channel

    async def ensure_started(self) -> None:
        """Start the supervisor on this event loop (idempotent, cheap after the first call)."""
        loop = asyncio.get_running_loop()
        if self._tasks and self._loop is loop:
            return
        # A server has one loop for its life; only tests run several in turn.
        self._loop, self._tasks = loop, []
        # Build the provider (importing its SDK takes a second or two) off the
        # event loop: a blocked loop renews no leases and serves no streams.
        await asyncio.to_thread(get_provider)
        if self._tasks:
            return
        self._tasks = [loop.create_task(self._tick_forever(), name="chat-supervisor-ticks")]
        # The fan-out channel is this process's address in run leases.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                await fanout.start()

    # --- ticks: leases, stop flags, sweeping ---------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("supervisor tick failed")
            await asyncio.sleep(settings.CHAT_RUN_HEARTBEAT_SECONDS)

    async def tick(self) -> None:
        local = runs.local_run_ids()
        if local:
            stop, lost = await _renew_leases(local, self.channel or "")
            for message_id in stop:
                runs.cancel_local(message_id, runs.CANCELLED_BY_USER)
            for message_id in lost:
                runs.cancel_local(message_id, runs.CANCELLED_AS_LOST)
        if settings.CHAT_SWEEP_ORPHANS:
            for message in await _expired_runs(exclude=local):
                await finish_orphan(message)

    # --- shutdown --------------------------------------------------------------------

    async def drain(self, seconds: float | None = None) -> None:
        """Finish what we can in `seconds`, interrupt the rest, close streams."""
        self.draining = True
        seconds = settings.CHAT_DRAIN_SECONDS if seconds is None else seconds
        logger.info("draining: %d runs, %d streams", len(runs.local_run_ids()), fanout.stream_count)
        await runs.wait_local(seconds)
        for message_id in runs.local_run_ids():
            runs.cancel_local(message_id, runs.CANCELLED_BY_SHUTDOWN)
        await runs.wait_local(10.0)  # their final saves
        fanout.close_all()  # streams end; browsers reconnect elsewhere and resume
        for task in self._tasks:
            task.cancel()


supervisor = Supervisor()


async def request_cancel(message_id: str, owner: str) -> None:
    """Ask the run's owner, wherever it is, to stop it now."""
    if runs.cancel_local(message_id, runs.CANCELLED_BY_USER) or not owner:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
            await get_channel_layer().send(owner, {"type": "run.cancel", "message_id": message_id})


async def finish_orphan(message: Message) -> bool:
    """End an active message whose run is gone; True if this process did it."""
    message_id = str(message.pk)
    snapshot = None
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
            snapshot = await get_replay_buffer().get(message_id)
    text = message.content
    if snapshot is not None and len(snapshot.text) > len(text):
        text = snapshot.text  # what reached viewers after the last checkpoint
    if message.cancel_requested:
        status, error = Message.Status.CANCELLED, None
    else:
        status = Message.Status.INTERRUPTED
        error = events.error_data(
            message_id=message_id,
            code="run_lost",
            message="The server generating this answer stopped; the text so far is kept.",
            retryable=True,
        )
    if not await _claim_orphan(message_id, text, status, error):
        return False  # another process's sweeper got there first
    logger.warning("run %s was orphaned; ended %s", message_id, status)
    end = events.message_end_data(
        message_id=message_id,
        status=status,
        stop_reason="",
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
    )
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
            await get_replay_buffer().finish(message_id, end, error)
    await runs.publish(
        events.conversation_group(message.conversation_id),
        {
            "event": "message_end",
            "message_id": message_id,
            "length": len(text),
            "data": end,
            "error": error,
        },
        message_id,
    )
    return True


@database_sync_to_async
def _renew_leases(message_ids: list[str], owner: str) -> tuple[list[str], list[str]]:
    """Extend our runs' leases. Returns (stop requested, no longer active).

    A run of ours whose message is no longer active was ended by another
    process's sweeper (our lease lapsed, e.g. the loop was blocked): stop it.
    """
    active = Message.objects.filter(pk__in=message_ids, status__in=Message.ACTIVE_STATUSES)
    active.update(run_owner=owner, run_lease_expires_at=timezone.now() + settings.CHAT_RUN_LEASE)
    rows = dict(active.values_list("pk", "cancel_requested"))
    stop = [str(pk) for pk, requested in rows.items() if requested]
    lost = [m for m in message_ids if m not in {str(pk) for pk in rows}]
    return stop, lost


@database_sync_to_async
def _expired_runs(exclude: list[str]) -> list[Message]:
    now = timezone.now()
    expired = Message.objects.filter(
        Q(run_lease_expires_at__lt=now) | Q(run_lease_expires_at__isnull=True),
        status__in=Message.ACTIVE_STATUSES,
    ).exclude(pk__in=exclude)
    return list(expired[:100])


@database_sync_to_async
def _claim_orphan(message_id: str, text: str, status: str, error: dict | None) -> bool:
    now = timezone.now()
    return bool(
        Message.objects.filter(
            Q(run_lease_expires_at__lt=now) | Q(run_lease_expires_at__isnull=True),
            pk=message_id,
            status__in=Message.ACTIVE_STATUSES,
        ).update(
            content=text,
            status=status,
            error_code=error["code"] if error else "",
            error_message=error["message"] if error else "",
            completed_at=now,
            run_lease_expires_at=None,
        )
    )
