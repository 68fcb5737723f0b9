"""What a run needs to know, prepared by the send that creates the answer."""

from __future__ import annotations

from dataclasses import dataclass

from ..conf import chat_settings
from ..events import message_start_data
from ..models import Message
from ..providers import ProviderRequest
from ..selectors import message_history_for_run


@dataclass
class RunJob:
    message_id: str
    conversation_id: str
    start: dict  # the `message_start` payload
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
        start=message_start_data(
            message_id=str(message.pk),
            role=message.role,
            status=Message.Status.STREAMING,
            created_at=message.created_at.isoformat(),
        ),
        request=ProviderRequest(
            model=conversation.model,
            system=conversation.system_prompt,
            messages=message_history_for_run(message=message),
            max_tokens=chat_settings.MAX_TOKENS,
        ),
    )
