"""Reads. Views and runs ask these functions, never the ORM directly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Length, TruncDate

from .errors import NotFound
from .models import Conversation, Message
from .providers import ChatTurn
from .search import search


def conversation_list(
    *, user, archived: bool = False, with_usage: bool = False
) -> QuerySet[Conversation]:
    """The user's conversations as the sidebar lists them: pinned first, then the most
    recently updated. Archived ones are left out, or with `archived`, listed alone.
    `with_usage`: with their token totals."""
    conversations = Conversation.objects.visible_to(user).filter(archived=archived)
    if with_usage:
        conversations = conversations.with_usage()
    return conversations.order_by("-pinned", "-updated_at", "-pk")


def conversation_search(
    *, user, query: str, archived: bool | None = None, with_usage: bool = False
) -> QuerySet[Conversation]:
    """The user's conversations whose title or any message matches `query`, best match
    first, each once, with `rank` and `snippet` (chat/search.py). Archived conversations
    are searched too, unless `archived` says which to search. `with_usage`: with their
    token totals."""
    conversations = Conversation.objects.visible_to(user)
    if archived is not None:
        conversations = conversations.filter(archived=archived)
    if with_usage:
        conversations = conversations.with_usage()
    return search(conversations, query)


def conversation_list_for_sidebar(
    *, user, current_id: uuid.UUID | str | None = None
) -> QuerySet[Conversation]:
    """The page's sidebar: the user's conversations that have a message, and the open one.

    The page makes a conversation with its first message, but API clients can create
    empty ones (and the page once made one for every click on "New conversation"): they
    stay out of the sidebar until they have a message, unless one is being viewed. The
    API's list (`conversation_list`) still lists them all.
    """
    shown = Q(Exists(Message.objects.filter(conversation=OuterRef("pk"))))
    if current_id is not None:
        shown |= Q(pk=current_id)
    return conversation_list(user=user).filter(shown)


def conversation_get_for_user(
    *, user, conversation_id: uuid.UUID | str, with_usage: bool = False
) -> Conversation:
    """The user's own conversation; anyone else's is indistinguishable from a missing one.
    `with_usage`: with its token totals, in the same query."""
    conversations = Conversation.objects.visible_to(user)
    if with_usage:
        conversations = conversations.with_usage()
    # `get` on the primary key, not `first()`: no ORDER BY to compile (every send asks this).
    try:
        return conversations.get(pk=conversation_id)
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


def message_export_page(
    *, conversation_id: uuid.UUID | str, after: Message | None, size: int
) -> list[Message]:
    """The next `size` messages of a conversation's export, oldest first, after `after`.

    An export reads in pages (keyset on the history's order, created_at then id) rather
    than all at once, so a long conversation is never held in memory whole, and each page
    is its own short query (no cursor held open while the file is sent).

    Every message is exported: regenerated answers too, marked by the export, which
    groups answers by the turn they reply to.
    TODO(branches): when messages can branch (`Message.parent` for edited user turns),
    filter to the default branch here, the one the page shows, and leave the rest out.
    """
    messages = Message.objects.filter(conversation_id=conversation_id)
    if after is not None:
        messages = messages.filter(
            Q(created_at__gt=after.created_at) | Q(created_at=after.created_at, id__gt=after.id)
        )
    # The stored HTML is the page's, not the export's, and can be as large as the text.
    return list(messages.defer("html", "html_key").order_by("created_at", "id")[:size])


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
    rows = {row[0]: row[1:] for row in _history_rows(message)}
    path = []
    step = _db_value(Message._meta.get_field("reply_to"), message.reply_to_id)
    # Every step goes to an older message, so the walk ends; `rows` shrinking stops a loop
    # made by hand (an admin's edit) all the same.
    while step in rows:
        role, content, reply_to_id, parent_id = rows.pop(step)
        if role == Message.Role.USER or content:
            path.append(ChatTurn(role=role, content=content))
        step = parent_id if role == Message.Role.USER else reply_to_id
    path.reverse()
    return path


def _history_rows(message: Message) -> list[tuple]:
    """(id, role, content, reply_to_id, parent_id) of every message before `message`.

    One range scan of the (conversation, created_at) index; the branch is picked out in
    Python. A recursive query that walks the branch in the database was slower on
    PostgreSQL: 1 ms against 0.2 ms for ten turns, 35-65 ms against 1-1.6 ms for 200
    (each step of its walk is a join the planner does not make an index lookup).
    Most of what the ORM spent here was building the SELECT, not running it: 0.64 ms a call
    against 0.16 ms written out (SQLite, ten turns, a loop of 2,000 calls), so it is written
    out. Ids come back as the database stores them (a UUID on PostgreSQL, hex text on
    SQLite): they are only compared with one another and with `_db_value` of an id.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT "id", "role", "content", "reply_to_id", "parent_id" FROM "chat_message"'
            ' WHERE "conversation_id" = %s AND "created_at" < %s',
            [
                _db_value(Message._meta.get_field("conversation"), message.conversation_id),
                _db_value(Message._meta.get_field("created_at"), message.created_at),
            ],
        )
        return cursor.fetchall()


def _db_value(field, value):
    return None if value is None else field.get_db_prep_value(value, connection)


def live_run_list(*, model: type[Message] = Message) -> QuerySet[Message]:
    """Answers being generated now, on any process, oldest first.

    `text_length`: the characters stored by the answer's last checkpoint (at most
    `CHAT_CHECKPOINT_INTERVAL` behind the run), counted by the database so the texts
    themselves are not loaded. The live count is only in the owning process's memory, and
    the model reports output tokens only at the end. `model`: a proxy of `Message`.
    """
    return (
        model.objects.filter(status__in=Message.ACTIVE_STATUSES)
        .select_related("conversation__owner")
        .defer("content", "html")
        .annotate(text_length=Length("content"))
        .order_by("created_at", "id")
    )


def usage_by_user_day(
    *, since: date | None = None, until: date | None = None, user_id=None
) -> list[dict]:
    """Per user per UTC day (the budget's days), newest day first: the user's messages
    sent, the answers they got and the answers' input and output tokens. One query.

    `since` and `until` are UTC days, both included.
    """
    messages = Message.objects.all()
    if since is not None:
        messages = messages.filter(created_at__gte=datetime.combine(since, time.min, UTC))
    if until is not None and until < date.max:  # the last day has no day after it
        end = datetime.combine(until + timedelta(days=1), time.min, UTC)
        messages = messages.filter(created_at__lt=end)
    if user_id is not None:
        messages = messages.filter(conversation__owner_id=user_id)
    username = f"conversation__owner__{get_user_model().USERNAME_FIELD}"
    return list(
        messages.values(
            day=TruncDate("created_at", tzinfo=UTC),
            user_id=F("conversation__owner_id"),
            username=F(username),
        )
        .annotate(
            messages=Count("pk", filter=Q(role=Message.Role.USER)),
            answers=Count("pk", filter=Q(role=Message.Role.ASSISTANT)),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
        )
        .order_by("-day", "username")
    )
