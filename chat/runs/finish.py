"""Ending an answer: one service for runs, stops, the sweeper and deletions alike.

It stores the final state (status, text, usage, error) and then tells every
viewer: the buffer gets the end event and the conversation's streams get
`message_end` (with the `error` before it, if any).
"""

from __future__ import annotations

import logging
from datetime import datetime

from .. import metrics
from ..events import MessageEnded, conversation_group, message_end_data
from ..models import Message
from ..outbox import Outbox
from . import store

logger = logging.getLogger(__name__)


async def finish_message(
    *,
    outbox: Outbox,
    conversation_id: str,
    message_id: str,
    text: str,
    status: str,
    stop_reason: str = "",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    usage_estimated: bool = False,
    error: dict | None = None,
    first_token_at: datetime | None = None,
    orphan: bool = False,
    save: bool = True,
) -> bool:
    """End `message_id` with `status`; False if it was no longer ours to end.

    `orphan`: the sweeper ending another process's run (only once its lease has
    lapsed). `save=False`: the row is gone (its conversation was deleted); viewers
    are still told.
    """
    text = store.storable(text)
    stop_reason = stop_reason if status == Message.Status.COMPLETE else ""
    if save:
        saved = await store.save_final(
            message_id,
            text=text,
            status=status,
            stop_reason=stop_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=usage_estimated,
            error=error,
            first_token_at=first_token_at,
            orphan=orphan,
        )
        if not saved:
            return False
    metrics.run_ended(status, error)
    # Logged once the database has it, before viewers are told (that waits for a flush).
    if orphan:
        logger.warning("run %s was orphaned; ended %s", message_id, status)
    elif error is not None:
        logger.warning("answer %s ended %s: %s", message_id, status, error["code"])
    end = message_end_data(
        message_id=message_id,
        status=status,
        stop_reason=stop_reason,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        usage_estimated=usage_estimated,
    )
    await outbox.emit_and_flush(
        conversation_group(conversation_id), MessageEnded(message_id, len(text), end, error)
    )
    return True
