"""Reads. Views and runs ask these functions, never the ORM directly."""

from __future__ import annotations

import time
import uuid

from django.db.models import QuerySet

from .errors import NotFound
from .models import Conversation, Message
from .providers import ChatTurn


def conversation_list(*, user) -> QuerySet[Conversation]:
    return Conversation.objects.visible_to(user).order_by("-updated_at")


def conversation_get_for_user(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    """The user's own conversation; anyone else's is indistinguishable from a missing one."""
    conversation = Conversation.objects.visible_to(user).filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


async def aconversation_get_for_user(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    conversation = await Conversation.objects.visible_to(user).filter(pk=conversation_id).afirst()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("created_at")


def message_active(*, conversation: Conversation) -> Message | None:
    return conversation.messages.filter(status__in=Message.ACTIVE_STATUSES).first()


def message_get_for_user(*, user, message_id: uuid.UUID | str) -> Message:
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, conversation__in=Conversation.objects.visible_to(user))
        .first()
    )
    if message is None:
        raise NotFound("Message not found.")
    return message


def message_wait_final(*, message: Message, timeout: float) -> Message:
    """Re-read `message` until it is no longer active, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while message.is_active and time.monotonic() < deadline:
        time.sleep(0.05)
        message.refresh_from_db()
    return message


def message_user_turn(*, message: Message) -> Message | None:
    """The user message an answer replies to (for answers stored without `reply_to`)."""
    return (
        message.conversation.messages.filter(
            role=Message.Role.USER, created_at__lt=message.created_at
        )
        .order_by("-created_at")
        .first()
    )


def message_history_for_run(*, message: Message) -> list[ChatTurn]:
    """The turns the model sees before answer `message`.

    Every user turn, each followed by its latest non-empty answer. Earlier
    attempts at a regenerated turn, and any attempt at the turn being answered
    now, are left out.
    """
    earlier = list(
        message.conversation.messages.filter(created_at__lt=message.created_at).order_by(
            "created_at"
        )
    )
    latest_answer: dict[object, Message] = {}
    for m in earlier:
        turn = m.reply_to_id or m.pk  # answers stored without `reply_to` stand alone
        if m.role == Message.Role.ASSISTANT and m.content and turn != message.reply_to_id:
            latest_answer[turn] = m  # later attempts overwrite earlier ones
    turns = []
    for m in earlier:
        if m.role == Message.Role.USER:
            turns.append(ChatTurn(role="user", content=m.content))
        elif latest_answer.get(m.reply_to_id or m.pk) is m:
            turns.append(ChatTurn(role="assistant", content=m.content))
    return turns
