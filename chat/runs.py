"""The generation run: one asyncio task per assistant message, owned by this process.

A run does not belong to any HTTP connection. It reads the provider stream and,
for every delta: appends it to the replay buffer, publishes it to the
conversation's channel-layer group, and (at most every
`CHAT_CHECKPOINT_INTERVAL` seconds) checkpoints the text to the database.
Whatever happens — upstream error, dropped connection, a bug, cancellation —
the message ends with a final status and its text saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from . import events
from . import fanout as fanout_module  # fanout imports this module too
from .models import Message
from .providers import ProviderError, ProviderRequest, StreamEnd, TextDelta, get_provider
from .replay import get_replay_buffer
from .selectors import message_history_for_run

logger = logging.getLogger(__name__)

# Runs owned by this process, by message id. Holding the task also keeps the
# event loop from garbage-collecting it while it runs.
_tasks: dict[str, asyncio.Task] = {}
# Runs whose coroutine has begun (a task cancelled before its first step never runs it).
_started: set[str] = set()
# Why a local run is being cancelled: the user's stop, or this process shutting down.
_cancel_reasons: dict[str, str] = {}

CANCELLED_BY_USER = "cancelled"
CANCELLED_BY_SHUTDOWN = "shutdown"
# Another process's sweeper already ended the message (our lease lapsed): just stop.
CANCELLED_AS_LOST = "lost"


def start_run(job: RunJob) -> None:
    """Start `job`'s run on the server's event loop (call from sync code, after commit).

    From a request thread the run is handed to the loop without waiting for it:
    the send's response need not wait for the loop to get round to it, and a
    stop asked afterwards still finds the task (the loop runs callbacks in order).
    """
    from .supervisor import supervisor

    loop = supervisor.loop
    if loop is not None and loop.is_running() and not _on_loop(loop):
        loop.call_soon_threadsafe(_create_task, job)
    else:
        async_to_sync(astart_run)(job)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def astart_run(job: RunJob) -> asyncio.Task:
    return _create_task(job)


def _create_task(job: RunJob) -> asyncio.Task:
    message_id = job.message_id
    # A fresh context: the run must not inherit the request's thread-sensitive
    # executor (and with it a thread and DB connection per request).
    task = asyncio.get_running_loop().create_task(
        generate(job), name=f"run-{message_id}", context=contextvars.Context()
    )
    _tasks[message_id] = task

    def forget(_: asyncio.Task) -> None:
        _tasks.pop(message_id, None)
        reason = _cancel_reasons.pop(message_id, None)
        if task.cancelled() and message_id not in _started and reason == CANCELLED_BY_USER:
            # Stopped before its first step: the coroutine never ran, so nothing
            # ended the answer. End it now, as a run that finds it stopped does.
            job.cancel_requested = True
            _create_task(job)
        _started.discard(message_id)

    task.add_done_callback(forget)
    return task


def request_cancel(message_id: str, owner: str) -> None:
    """Stop a run wherever it runs (call from sync code)."""
    from .supervisor import request_cancel as arequest_cancel

    async_to_sync(arequest_cancel)(message_id, owner)


def local_run_ids() -> list[str]:
    return list(_tasks)


def cancel_local(message_id: str, reason: str = CANCELLED_BY_USER) -> bool:
    """Cancel a run this process owns; the run then saves its text and final status."""
    task = _tasks.get(message_id)
    if task is None or task.done():
        return False
    _cancel_reasons.setdefault(message_id, reason)
    task.cancel()
    return True


async def wait_local(seconds: float) -> None:
    """Wait until every local run has ended, or `seconds` pass."""
    if _tasks:
        await asyncio.wait(list(_tasks.values()), timeout=seconds)


class RunLost(Exception):
    """The message was ended by someone else (a sweeper, a deletion): stop quietly."""


@dataclass
class RunJob:
    message_id: str
    conversation_id: str
    start: dict
    request: ProviderRequest
    cancel_requested: bool = False
    # Created before this process had its fan-out channel: the run takes the lease.
    needs_claim: bool = False


def build_job(message: Message) -> RunJob:
    """What a run needs to know about pending answer `message` (one query: the history).

    Called in the transaction that creates the answer, so the run starts without
    reading the database again.
    """
    conversation = message.conversation
    return RunJob(
        cancel_requested=message.cancel_requested,
        needs_claim=not message.run_owner,
        message_id=str(message.pk),
        conversation_id=str(conversation.pk),
        start=events.message_start_data(
            message_id=str(message.pk),
            role=message.role,
            status=Message.Status.STREAMING,
            created_at=message.created_at.isoformat(),
        ),
        request=ProviderRequest(
            model=conversation.model,
            system=conversation.system_prompt,
            messages=message_history_for_run(message=message),
            max_tokens=settings.CHAT_MAX_TOKENS,
        ),
    )


async def generate(job: RunJob) -> None:
    from .supervisor import supervisor

    _started.add(job.message_id)
    await supervisor.ensure_started()
    if job.needs_claim and not await _claim(job.message_id, supervisor.channel or ""):
        return  # stopped, deleted, swept or claimed before it started
    await Run(job).execute()


class Run:
    def __init__(self, job: RunJob) -> None:
        self.job = job
        self.id = job.message_id
        self.group = events.conversation_group(job.conversation_id)
        self.buffer = get_replay_buffer()
        self.parts: list[str] = []
        self.length = 0
        self.checkpointed_length = -1
        self.buffer_failed = False

    async def execute(self) -> None:
        status, end, error = Message.Status.COMPLETE, StreamEnd(), None
        # Checkpoints are what a database write per token would cost, paid at
        # most once per interval: the first after one interval (a short answer
        # gets none; its final save is enough), then every interval.
        interval = settings.CHAT_CHECKPOINT_INTERVAL
        last_checkpoint = time.monotonic()
        try:
            await self._buffered(self.buffer.start(self.id, self.job.start))
            await self._publish({"event": "message_start", "data": self.job.start})
            if self.job.cancel_requested:  # stopped before it started
                await self._finish(Message.Status.CANCELLED, end, None)
                return
            # `aclosing`: however the loop ends — cancelled mid-publish included —
            # the provider stream (and its upstream HTTP request) closes right
            # away, before the final saves below.
            async with contextlib.aclosing(get_provider().stream(self.job.request)) as stream:
                async for item in stream:
                    if isinstance(item, StreamEnd):
                        end = item
                        continue
                    await self._append(item)
                    now = time.monotonic()
                    if now - last_checkpoint >= interval:
                        last_checkpoint = now
                        await self._checkpoint()
        except RunLost:
            logger.warning("run %s stops: its message was ended elsewhere", self.id)
            return
        except ProviderError as exc:
            status = Message.Status.INTERRUPTED if self.length else Message.Status.FAILED
            error = events.error_data(
                message_id=self.id, code=exc.code, message=exc.message, retryable=exc.retryable
            )
        except asyncio.CancelledError:
            reason = _cancel_reasons.get(self.id, CANCELLED_BY_SHUTDOWN)
            if reason == CANCELLED_AS_LOST:
                raise
            if reason == CANCELLED_BY_USER:
                status = Message.Status.CANCELLED
            else:
                status = Message.Status.INTERRUPTED
                error = events.error_data(
                    message_id=self.id,
                    code="server_shutdown",
                    message="The server generating this answer shut down.",
                    retryable=True,
                )
            await self._finish(status, end, error)
            raise
        except Exception:
            logger.exception("run %s crashed", self.id)
            status = Message.Status.INTERRUPTED if self.length else Message.Status.FAILED
            error = events.error_data(
                message_id=self.id,
                code="internal_error",
                message="Something went wrong while generating the answer.",
                retryable=True,
            )
        await self._finish(status, end, error)

    async def _append(self, delta: TextDelta) -> None:
        start = self.length
        self.parts.append(delta.text)
        self.length += len(delta.text)
        # Buffered before it is published: whatever a viewer has seen, the buffer
        # has (a sweeper saves the buffer's text if this process dies).
        await self._buffered(self.buffer.append(self.id, delta.text))
        await self._publish(
            {"event": "delta", "message_id": self.id, "start": start, "text": delta.text}
        )

    def _text(self) -> str:
        text = "".join(self.parts)
        self.parts[:] = [text]
        return text

    async def _checkpoint(self) -> None:
        if self.length != self.checkpointed_length:
            self.checkpointed_length = self.length
            if not await _save_checkpoint(self.id, self._text()):
                raise RunLost()

    async def _finish(self, status: str, end: StreamEnd, error: dict | None) -> None:
        text = self._text()
        if error is not None:
            logger.warning("run %s ended %s: %s", self.id, status, error["code"])
        await _save_final(self.id, text, status, end, error)
        end_data = events.message_end_data(
            message_id=self.id,
            status=status,
            stop_reason=end.stop_reason if status == Message.Status.COMPLETE else "",
            input_tokens=end.input_tokens,
            output_tokens=end.output_tokens,
        )
        await self._buffered(self.buffer.finish(self.id, end_data, error))
        await self._publish(
            {
                "event": "message_end",
                "message_id": self.id,
                "length": len(text),
                "data": end_data,
                "error": error,
            }
        )

    async def _publish(self, payload: dict) -> None:
        await publish(self.group, payload, self.id)

    async def _buffered(self, operation) -> None:
        # The buffer (Redis) may be down or slow: the run goes on and the
        # database checkpoints keep the text; readers fall back to the database.
        # An in-process buffer cannot stall, so it needs no timer per token.
        try:
            if self.buffer.in_process:
                await operation
                return
            async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                await operation
        except Exception as exc:
            if not self.buffer_failed:
                logger.warning("run %s: replay buffer unavailable (%r)", self.id, exc)
            self.buffer_failed = True


async def publish(group: str, payload: dict, message_id: str) -> None:
    """Best-effort live fan-out: a lost event is repaired from the buffer or database."""
    try:
        await fanout_module.fanout.publish(group, {"type": "chat.event", "group": group, **payload})
    except Exception as exc:
        logger.warning("run %s could not publish %s: %r", message_id, payload["event"], exc)


# --- Database boundaries (the only places the run touches the ORM).


@database_sync_to_async
def _claim(message_id: str, owner: str) -> bool:
    """Lease a pending answer that was created without an owner; False if it is gone."""
    return bool(
        Message.objects.filter(pk=message_id, status=Message.Status.PENDING, run_owner="").update(
            run_owner=owner, run_lease_expires_at=timezone.now() + settings.CHAT_RUN_LEASE
        )
    )


@database_sync_to_async
def _save_checkpoint(message_id: str, text: str) -> bool:
    """Save the text so far; False if the message is no longer ours to write."""
    return bool(
        Message.objects.filter(pk=message_id, status__in=Message.ACTIVE_STATUSES).update(
            content=text, status=Message.Status.STREAMING
        )
    )


@database_sync_to_async
def _save_final(
    message_id: str, text: str, status: str, end: StreamEnd, error: dict | None
) -> None:
    Message.objects.filter(pk=message_id, status__in=Message.ACTIVE_STATUSES).update(
        content=text,
        status=status,
        stop_reason=end.stop_reason if status == Message.Status.COMPLETE else "",
        input_tokens=end.input_tokens,
        output_tokens=end.output_tokens,
        error_code=error["code"] if error else "",
        error_message=error["message"] if error else "",
        completed_at=timezone.now(),
        run_lease_expires_at=None,
    )
