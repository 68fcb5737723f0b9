"""The generation run: one asyncio task per assistant message, owned by this process.

A run does not belong to any HTTP connection. It reads the provider stream and
emits every delta to the outbox (the replay buffer and the conversation's
streams, chat/outbox.py) without waiting; the run manager saves its text to the
database now and then (checkpoints). Whatever happens — upstream error, dropped
connection, a bug, a stop, shutdown — the message ends with a final status and
its text saved, through `finish_message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from enum import StrEnum

from django.utils import timezone

from .. import metrics
from ..context import estimate_tokens
from ..events import MessageStarted, RunError, TextAppended, conversation_group, run_error_data
from ..models import Message
from ..outbox import Outbox
from ..providers import ProviderError, StreamEnd, TextDelta, Usage, get_provider
from .finish import finish_message
from .job import RunJob

logger = logging.getLogger(__name__)


class StopReason(StrEnum):
    """Why a run's task was cancelled."""

    USER = "user"  # the stop button (or API): ends `cancelled`
    SHUTDOWN = "shutdown"  # this process is going away: ends `interrupted`
    LOST = "lost"  # someone else ended the message (a sweeper): just stop
    DELETED = "deleted"  # the conversation is gone: tell viewers, save nothing


class Run:
    def __init__(self, job: RunJob, *, outbox: Outbox) -> None:
        self.job = job
        self.id = job.message_id
        self.group = conversation_group(job.conversation_id)
        self.outbox = outbox
        self.stop_reason: StopReason | None = None
        self.parts: list[str] = []
        self.length = 0
        self.usage = Usage()  # what the model reported before its end, if anything
        self.first_token_at: datetime | None = None  # when its first text came
        # The manager's checkpoints: the first waits one interval after the start.
        self.checkpointed_at = time.monotonic()
        self.checkpointed_length = 0
        self.started_at = time.monotonic()

    def text(self) -> str:
        text = "".join(self.parts)
        self.parts[:] = [text]
        return text

    async def execute(self) -> None:
        status, end, error = Message.Status.COMPLETE, StreamEnd(), None
        metrics.run_started()
        try:
            self.outbox.emit(self.group, MessageStarted(self.id, self.job.start))
            if self.job.cancel_requested:  # stopped before it started
                await self._finish(Message.Status.CANCELLED, end, None)
                return
            # `aclosing`: however the loop ends — cancelled included — the provider
            # stream (and its upstream HTTP request) closes right away, before the
            # final save below.
            async with contextlib.aclosing(get_provider().stream(self.job.request)) as stream:
                async for item in stream:
                    if type(item) is TextDelta:
                        self._append(item.text)
                    elif isinstance(item, StreamEnd):
                        end = item
                    elif isinstance(item, Usage):
                        self.usage = item
        except ProviderError as exc:
            metrics.upstream_error(exc.code)
            status = Message.Status.INTERRUPTED if self.length else Message.Status.FAILED
            error = {
                "message_id": self.id,
                "code": exc.code,
                "message": exc.message,
                "retryable": exc.retryable,
            }
        except asyncio.CancelledError:
            await self._cancelled()
            raise
        except Exception:
            logger.exception("run %s crashed", self.id)
            status = Message.Status.INTERRUPTED if self.length else Message.Status.FAILED
            error = run_error_data(message_id=self.id, code=RunError.INTERNAL)
        await self._finish(status, end, error)

    def _append(self, text: str) -> None:
        """The per-token path: no await, no database, no network."""
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")  # see `store.storable`
        start = self.length
        if not start and text:  # the first text (one comparison per token after it)
            self.first_token_at = timezone.now()
            metrics.first_token(self.started_at)
        metrics.token_relayed()
        self.parts.append(text)
        self.length = start + len(text)
        self.outbox.emit(self.group, TextAppended(self.id, start, text))

    async def _cancelled(self) -> None:
        reason = self.stop_reason or StopReason.SHUTDOWN
        if reason == StopReason.LOST:
            logger.warning("run %s stops: its message was ended elsewhere", self.id)
        elif reason == StopReason.DELETED:
            error = run_error_data(message_id=self.id, code=RunError.CONVERSATION_DELETED)
            await self._finish(Message.Status.CANCELLED, StreamEnd(), error, save=False)
        elif reason == StopReason.USER:
            await self._finish(Message.Status.CANCELLED, StreamEnd(), None)
        else:
            error = run_error_data(message_id=self.id, code=RunError.SERVER_SHUTDOWN)
            await self._finish(Message.Status.INTERRUPTED, StreamEnd(), error)

    async def _finish(
        self, status: str, end: StreamEnd, error: dict | None, *, save: bool = True
    ) -> None:
        text = self.text()
        input_tokens, output_tokens, estimated = self._usage(end, text)
        await finish_message(
            outbox=self.outbox,
            conversation_id=self.job.conversation_id,
            message_id=self.id,
            text=text,
            status=status,
            stop_reason=end.stop_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=estimated,
            error=error,
            first_token_at=self.first_token_at,
            save=save,
        )

    def _usage(self, end: StreamEnd, text: str) -> tuple[int, int, bool]:
        """(input tokens, output tokens, whether either is an estimate) of an answer.

        A complete answer has the model's figures (`StreamEnd`). One stopped or broken
        before its end still used tokens and counts them (the daily budget, the
        conversation's totals): what the model reported before it ended (the input at
        the start of its stream, the output if a `message_delta` came), else estimates —
        the output from the text that streamed, the input from the job's. An answer
        that never reached the model (no report, no text) used nothing.
        """
        reported_input = end.input_tokens
        if reported_input is None:
            reported_input = self.usage.input_tokens
        reported_output = end.output_tokens
        if reported_output is None:
            reported_output = self.usage.output_tokens
        reached_model = reported_input is not None or bool(text)
        input_tokens, output_tokens = reported_input, reported_output
        if input_tokens is None:
            input_tokens = self.job.input_tokens_estimate if reached_model else 0
        if output_tokens is None:
            output_tokens = estimate_tokens(text)
        estimated = (reported_input, reported_output) != (input_tokens, output_tokens)
        return input_tokens, output_tokens, estimated
