"""Reads. Views and runs ask these functions, never the ORM directly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce

from .errors import NotFound
from .models import Conversation, Message
from .providers import ChatTurn


def conversation_list(*, user) -> QuerySet[Conversation]:
    return Conversation.objects.visible_to(user).order_by("-updated_at")


def conversation_get_for_user(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    """The user's own conversation; anyone else's is indistinguishable from a missing one."""
    # `get` on the primary key, not `first()`: no ORDER BY to compile (every send asks this).
    try:
        return Conversation.objects.visible_to(user).get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None


async def aconversation_get_for_user(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    try:
        return await Conversation.objects.visible_to(user).aget(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("created_at", "id")


@dataclass(frozen=True)
class LatestMessages:
    messages: list[Message]  # oldest first
    since: datetime | None  # when the first of them was sent
    has_older: bool  # whether messages before `since` exist


def message_list_latest(*, conversation: Conversation, size: int) -> LatestMessages:
    """About the latest `size` messages, oldest first, starting where a turn starts.

    A turn is a user message and its answers (several when it was regenerated, all sent
    after it and before the next turn), and the page's "n / m" switcher needs all of
    them: so if the `size`-th newest message is an answer, the window reaches back to its
    question. Everything sent at or after that moment is included, so the messages before
    `since` are exactly the rest of the history.
    """
    size = max(size, 1)
    edge = list(
        conversation.messages.order_by("-created_at", "-id").values(
            "created_at", "reply_to__created_at"
        )[size - 1 : size]
    )
    if not edge:
        return LatestMessages(list(message_list(conversation=conversation)), None, False)
    since = edge[0]["reply_to__created_at"] or edge[0]["created_at"]
    return LatestMessages(
        messages=list(message_list(conversation=conversation).filter(created_at__gte=since)),
        since=since,
        has_older=conversation.messages.filter(created_at__lt=since).exists(),
    )


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


def message_latest_answer_id(*, conversation: Conversation) -> uuid.UUID | None:
    """The newest answer's id: what a send without `parent` follows (the end of the
    default branch, whose last message is always an answer)."""
    return (
        conversation.messages.filter(role=Message.Role.ASSISTANT)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )


def message_is_answer_in(*, conversation: Conversation, message_id: uuid.UUID | str) -> bool:
    return conversation.messages.filter(pk=message_id, role=Message.Role.ASSISTANT).exists()


def message_user_turn(*, message: Message) -> Message | None:
    """The user message an answer replies to (for answers stored without `reply_to`)."""
    return (
        message.conversation.messages.filter(
            role=Message.Role.USER, created_at__lt=message.created_at
        )
        .order_by("-created_at")
        .first()
    )


def tokens_used_since(*, user_id: int, since: datetime) -> int:
    """Input plus output tokens of the user's answers created at or after `since`.

    One aggregate query. Every send and regenerate saves its conversation after creating
    the answer, so the conversation of an answer created since `since` was updated since
    then too: saying so lets the (owner, updated_at) index find the day's few
    conversations, and (conversation, created_at) their answers, however long the
    user's history is.
    """
    used = Message.objects.filter(
        conversation__owner_id=user_id,
        conversation__updated_at__gte=since,
        role=Message.Role.ASSISTANT,
        created_at__gte=since,
    ).aggregate(total=Sum(Coalesce("input_tokens", 0) + Coalesce("output_tokens", 0)))
    return used["total"] or 0


def message_history_for_run(*, message: Message) -> list[ChatTurn]:
    """The turns the model sees before answer `message`: the branch it answers.

    The path from the root to the user message it replies to, oldest first: each user
    message, the answer it followed (its `parent`), that answer's question (`reply_to`),
    and so on. Other attempts at a turn and other branches are left out, and so are
    answers with no text (one that failed before any).
    """
    return [
        ChatTurn(role=role, content=content)
        for role, content in _path_rows(message)
        if role == Message.Role.USER or content
    ]


# The branch, walked up from a user message in one recursive query: a user message leads
# to its `parent` answer, an answer to its `reply_to` question. Each step is a primary-key
# lookup, and the walk stays in the conversation and is bounded, so a bad row (an admin's
# edit making a loop) cannot make it run forever.
_PATH_SQL = """
WITH RECURSIVE "path" ("id", "role", "content", "next_id", "depth") AS (
    SELECT "id", "role", "content",
           CASE WHEN "role" = 'user' THEN "parent_id" ELSE "reply_to_id" END, 0
    FROM "chat_message" WHERE "id" = %(start)s AND "conversation_id" = %(conversation)s
  UNION ALL
    SELECT m."id", m."role", m."content",
           CASE WHEN m."role" = 'user' THEN m."parent_id" ELSE m."reply_to_id" END,
           p."depth" + 1
    FROM "chat_message" m JOIN "path" p ON m."id" = p."next_id"
    WHERE m."conversation_id" = %(conversation)s AND p."depth" < %(limit)s
)
SELECT "role", "content" FROM "path" ORDER BY "depth" DESC
"""


def _path_rows(message: Message) -> list[tuple[str, str]]:
    """(role, content) of the branch ending at the user message `message` replies to,
    oldest first.

    Every answer reads its history, and most of what the ORM spent here was building the
    SELECT, not running it: 0.64 ms a call against 0.16 ms written out (SQLite, ten turns,
    a loop of 2,000 calls). The ORM cannot write a recursive query anyway.
    """
    if message.reply_to_id is None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _PATH_SQL,
            {
                "start": _db_value(Message._meta.get_field("reply_to"), message.reply_to_id),
                "conversation": _db_value(
                    Message._meta.get_field("conversation"), message.conversation_id
                ),
                "limit": _PATH_LIMIT,
            },
        )
        return cursor.fetchall()


# Far more messages than any conversation has (the page and the context window give up
# long before); only there to end a walk round a loop.
_PATH_LIMIT = 1_000_000


def _db_value(field, value):
    return None if value is None else field.get_db_prep_value(value, connection)
