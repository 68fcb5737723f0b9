"""What a run needs to know, prepared by the send that creates the answer."""

from __future__ import annotations

from dataclasses import dataclass

from .. import catalog
from ..context import context_tokens, fit_history, max_output_tokens
from ..errors import ContextTooLong
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
    # The request's input tokens, estimated: stored when the provider never says.
    input_tokens_estimate: int = 0
    cancel_requested: bool = False
    # Created before this process had its fan-out channel: the run takes the lease.
    needs_claim: bool = False


def build_job(message: Message) -> RunJob:
    """What a run needs to know about pending answer `message` (one query: the history).

    Called in the transaction that creates the answer — before its INSERT, so the answer
    is stored with `context_omitted_turns` — and the run starts without reading the
    database again. Raises `ContextTooLong` if the turn being answered does not fit the
    model's context window (the transaction then rolls back).

    The model is the conversation's, or the default one if that is no longer offered
    (`catalog.model_for_run`): `request.model` is what the answer records.
    """
    conversation = message.conversation
    model = catalog.model_for_run(conversation.model).id
    max_tokens = max_output_tokens(model)
    window = fit_history(
        message_history_for_run(message=message),
        model=model,
        system=conversation.system_prompt,
        max_tokens=max_tokens,
    )
    return RunJob(
        cancel_requested=message.cancel_requested,
        needs_claim=not message.run_owner,
        message_id=str(message.pk),
        conversation_id=str(conversation.pk),
        context_omitted_turns=window.omitted_turns,
        input_tokens_estimate=window.input_tokens,
        start=message_start_data(
            message_id=str(message.pk),
            role=message.role,
            status=Message.Status.STREAMING,
            created_at=message.created_at.isoformat(),
            context_omitted_turns=window.omitted_turns,
            model=model,
        ),
        request=ProviderRequest(
            model=model,
            system=conversation.system_prompt,
            messages=window.messages,
            max_tokens=max_tokens,
        ),
    )


def estimate_input_tokens(message: Message) -> int:
    """The input tokens answer `message` was (or would have been) sent, estimated: for the
    sweeper, which ends answers whose run, and with it the job, is gone. One query."""
    conversation = message.conversation
    model = message.model or conversation.model
    try:
        window = fit_history(
            message_history_for_run(message=message),
            model=model,
            system=conversation.system_prompt,
            max_tokens=max_output_tokens(model),
        )
    except ContextTooLong:  # the limits changed since: it was sent at most the window
        return context_tokens(model)
    return window.input_tokens
