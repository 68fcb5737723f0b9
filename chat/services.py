"""Writes. Each service is one transaction; runs start only after it commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import runs, selectors
from .errors import ContentTooLong, RunActive
from .models import Conversation, Message
from .tokens import StreamToken

_TITLE_LENGTH = 60


@transaction.atomic
def conversation_create(
    *, owner, title: str = "", system_prompt: str = "", model: str = ""
) -> Conversation:
    return Conversation.objects.create(
        owner=owner,
        title=title.strip(),
        system_prompt=system_prompt,
        model=model or settings.CHAT_MODEL,
    )


@transaction.atomic
def conversation_update(*, conversation: Conversation, **fields) -> Conversation:
    for name in ("title", "system_prompt", "model"):
        if name in fields:
            setattr(conversation, name, fields[name])
    conversation.save()
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


@dataclass(frozen=True)
class SendResult:
    user_message: Message
    assistant_message: Message


def message_send(*, conversation: Conversation, content: str) -> SendResult:
    """Store the user's message and an empty assistant message, then start the run.

    One run per conversation: a send while an answer is pending or streaming is
    refused with `RunActive` (the database constraint settles races).
    """
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ContentTooLong(
            f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters."
        )
    try:
        with transaction.atomic():
            if selectors.message_active(conversation=conversation) is not None:
                raise RunActive()
            now = timezone.now()
            user_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=content,
                status=Message.Status.COMPLETE,
                created_at=now,
                completed_at=now,
            )
            # One microsecond later, so history order never depends on a tie.
            assistant_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status=Message.Status.PENDING,
                created_at=now + timedelta(microseconds=1),
            )
            if not conversation.title:
                conversation.title = " ".join(content.split())[:_TITLE_LENGTH]
            conversation.save(update_fields=["title", "updated_at"])
            message_id = str(assistant_message.pk)
            transaction.on_commit(lambda: runs.start_run(message_id))
    except IntegrityError as exc:
        # Lost a race with another send: the constraint fired. (Databases word
        # the error differently, so ask the data, not the message.)
        if not conversation.messages.filter(status__in=Message.ACTIVE_STATUSES).exists():
            raise
        raise RunActive() from exc
    return SendResult(user_message, assistant_message)


def stream_token_create(*, user, conversation: Conversation) -> StreamToken:
    return StreamToken.for_conversation(user=user, conversation=conversation)
