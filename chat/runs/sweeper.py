"""Ending answers whose run died with its process (SIGKILL, OOM, a lost machine).

An active answer whose lease has lapsed belongs to a dead process. The sweeper
ends it `interrupted` (or `cancelled` if a stop was asked), keeps the longest
text it can find — the replay buffer's, else the last checkpoint — with its usage
estimated (the model's report died with the run), and tells viewers. Each orphan
is handled on its own: one that cannot be saved is logged and ended with the text
the database already holds, and never holds up the rest.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async

from ..context import estimate_tokens
from ..errors import BackendUnavailable
from ..events import RunError, run_error_data
from ..models import Message
from ..outbox import Outbox
from . import store
from .finish import finish_message
from .job import estimate_input_tokens

logger = logging.getLogger(__name__)


async def sweep(*, exclude: list[str], outbox: Outbox) -> int:
    """End every expired run not in `exclude` (this process's own); how many were ended."""
    return await end_orphans(await store.expired_runs(exclude), outbox=outbox)


async def end_orphans(messages: list[Message], *, outbox: Outbox) -> int:
    """End these expired answers, each on its own; how many were ended (by this call)."""
    ended = 0
    for message in messages:
        try:
            ended += await end_orphan(message, outbox=outbox)
        except Exception:
            logger.exception("could not end orphaned answer %s with its buffered text", message.pk)
            try:
                ended += await end_orphan(message, outbox=outbox, use_buffer=False)
            except Exception:
                logger.exception("could not end orphaned answer %s", message.pk)
    return ended


async def end_orphan(message: Message, *, outbox: Outbox, use_buffer: bool = True) -> bool:
    """End an active message whose run is gone; True if this process did it."""
    message_id = str(message.pk)
    text = message.content
    if use_buffer:
        try:
            snapshot = await outbox.buffer.get(message_id)
        except BackendUnavailable:
            snapshot = None
        if snapshot is not None and len(snapshot.text) > len(text):
            text = snapshot.text  # what reached viewers after the last checkpoint
    if message.cancel_requested:
        status, error = Message.Status.CANCELLED, None
    else:
        status = Message.Status.INTERRUPTED
        error = run_error_data(message_id=message_id, code=RunError.RUN_LOST)
    # The run's reports died with it: the input as the send would have sent it (one
    # query), the output from the text that streamed.
    input_tokens = message.input_tokens
    if input_tokens is None:
        try:
            input_tokens = await database_sync_to_async(estimate_input_tokens)(message)
        except Exception:  # a usage figure must not keep an orphan from ending
            logger.exception("could not estimate the input of orphaned answer %s", message_id)
            input_tokens = 0
    return await finish_message(
        outbox=outbox,
        conversation_id=str(message.conversation_id),
        message_id=message_id,
        text=text,
        status=status,
        input_tokens=input_tokens,
        output_tokens=estimate_tokens(text),
        usage_estimated=True,
        error=error,
        orphan=True,
    )
