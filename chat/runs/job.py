"""What a run needs to know, prepared by the send that creates the answer."""

from __future__ import annotations

from dataclasses import dataclass

from ..conf import chat_settings
from ..context import fit_history
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
    # Earlier exchanges left out of `request` to fit the model's context window.
    context_omitted_turns: int = 0
    cancel_requested: bool = False
    # Created before this process had its fan-out channel: the run takes the lease.
    needs_claim: bool = False


def build_job(message: Message) -> RunJob:
    """What a run needs to know about pending answer `message` (one query: the history).

    Called in the transaction that creates the answer — before its INSERT, so the answer
    is stored with `context_omitted_turns` — and the run starts without reading the
    database again. Raises `ContextTooLong` if the turn being answered does not fit the
    model's context window (the transaction then rolls back).
    """
    conversation = message.conversation
    max_tokens = chat_settings.MAX_TOKENS
    window = fit_history(
        message_history_for_run(message=message),
        model=conversation.model,
        system=conversation.system_prompt,
        max_tokens=max_tokens,
    )
    return RunJob(
        cancel_requested=message.cancel_requested,
        needs_claim=not message.run_owner,
        message_id=str(message.pk),
        conversation_id=str(conversation.pk),
        context_omitted_turns=window.omitted_turns,
        start=message_start_data(
            message_id=str(message.pk),
            role=message.role,
            status=Message.Status.STREAMING,
            created_at=message.created_at.isoformat(),
            context_omitted_turns=window.omitted_turns,
        ),
        request=ProviderRequest(
            model=conversation.model,
            system=conversation.system_prompt,
            messages=window.messages,
            max_tokens=max_tokens,
        ),
    )
