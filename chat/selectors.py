"""Reads. Views and runs ask these functions, never the ORM directly."""

from __future__ import annotations

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


def message_history_for_run(*, message: Message) -> list[ChatTurn]:
    """The turns the model sees before `message`: user turns and non-empty answers."""
    earlier = message.conversation.messages.filter(created_at__lt=message.created_at).exclude(
        role=Message.Role.ASSISTANT, content=""
    )
    return [ChatTurn(role=m.role, content=m.content) for m in earlier.order_by("created_at")]
