"""Writes. Each service is one transaction; runs start only after it commits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import budget, catalog, runs, selectors
from .conf import chat_settings
from .errors import (
    ContentTooLong,
    InvalidParent,
    MessageFinished,
    NotAnAnswer,
    NotAUserMessage,
    Overloaded,
    RunActive,
    Unavailable,
)
from .models import Conversation, Message
from .outbox import outbox
from .rendering import html_key, render_markdown
from .replay import get_replay_buffer
from .runs import store
from .runs.sweeper import end_orphans
from .tokens import StreamToken

_TITLE_LENGTH = 60


@transaction.atomic
def conversation_create(
    *,
    owner,
    title: str = "",
    system_prompt: str = "",
    model: str = "",
    pinned: bool = False,
    archived: bool = False,
) -> Conversation:
    """A new conversation; `model` must be offered (the API checks), the default if blank."""
    return Conversation.objects.create(
        owner=owner,
        title=title.strip(),
        system_prompt=system_prompt,
        model=model or catalog.default_model().id,
        pinned=pinned and not archived,  # as in `conversation_update`: archiving wins
        archived=archived,
    )


@transaction.atomic
def conversation_update(*, conversation: Conversation, **fields) -> Conversation:
    """Change the given fields. Pinning and archiving move the conversation between the
    list's places without changing `updated_at` (the list's order of recent activity):
    pinning takes it out of the archive and archiving unpins it (asked for both at once,
    archiving wins: a conversation is in one place, `pinned_or_archived_not_both`)."""
    if fields.get("archived"):
        fields["pinned"] = False
    elif fields.get("pinned"):
        fields["archived"] = False
    edited = [name for name in ("title", "system_prompt", "model") if name in fields]
    placed = [name for name in ("pinned", "archived") if name in fields]
    for name in edited + placed:
        setattr(conversation, name, fields[name])
    if edited:
        conversation.save()
    elif placed:
        conversation.save(update_fields=placed)  # `updated_at` (auto_now) is left as it was
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete it with its messages; a run still generating in it stops, and its open
    streams get a final event and end."""
    conversation_id = str(conversation.pk)
    active = [
        (str(pk), owner)
        for pk, owner in conversation.messages.filter(
            status__in=Message.ACTIVE_STATUSES
        ).values_list("pk", "run_owner")
    ]
    conversation.delete()
    transaction.on_commit(lambda: runs.manager.conversation_deleted(conversation_id, active))


@dataclass(frozen=True)
class SendResult:
    user_message: Message
    assistant_message: Message


def message_send(
    *, conversation: Conversation, content: str, parent_id: uuid.UUID | str | None = None
) -> SendResult:
    """Store the user's message and an empty assistant message, then start the run.

    The message follows answer `parent_id` (an answer in this conversation, else
    `InvalidParent`): the last answer of the branch the sender reads. Without one it
    follows the conversation's newest answer, so a client that knows nothing of branches
    continues the newest one, as when a conversation was a single line.

    One run per conversation: a send while an answer is pending or streaming is
    refused with `RunActive`. The database constraint decides (the answer's INSERT
    fails and the transaction rolls back), so a send costs no extra query to ask.
    Refused too: a user who has spent today's tokens (`TokenBudgetExhausted`), and a
    message too long for the model's context window on its own (`ContextTooLong`).
    """
    _admit()
    _check_length(content)
    if parent_id is None:
        parent_id = selectors.message_latest_answer_id(conversation=conversation)
    elif not selectors.message_is_answer_in(conversation=conversation, message_id=parent_id):
        raise InvalidParent()
    budget.ensure_budget_left(user_id=conversation.owner_id)
    return _store_turn(conversation=conversation, content=content, parent_id=parent_id)


def message_edit(*, message: Message, content: str) -> SendResult:
    """Send `content` in place of user message `message`: a new user message with the same
    parent (a new branch from that turn; the edited one and its answers are kept), and its
    answer, whose run starts as for a send. Refused as a send is."""
    _admit()
    if message.role != Message.Role.USER:
        raise NotAUserMessage()
    _check_length(content)
    budget.ensure_budget_left(user_id=message.conversation.owner_id)
    return _store_turn(
        conversation=message.conversation, content=content, parent_id=message.parent_id
    )


def _check_length(content: str) -> None:
    limit = chat_settings.MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ContentTooLong(f"Messages are limited to {limit} characters.")


def _store_turn(
    *, conversation: Conversation, content: str, parent_id: uuid.UUID | str | None
) -> SendResult:
    """The user message (after answer `parent_id`) and its pending answer, in one
    transaction; the answer's run starts once it commits."""
    try:
        with transaction.atomic():
            now = timezone.now()
            user_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=content,
                status=Message.Status.COMPLETE,
                parent_id=parent_id,
                created_at=now,
                completed_at=now,
            )
            # One microsecond later, so history order never depends on a tie.
            assistant_message = _create_answer(
                user_message, created_at=now + timedelta(microseconds=1)
            )
            if not conversation.title:
                conversation.title = " ".join(content.split())[:_TITLE_LENGTH]
            conversation.save(update_fields=["title", "updated_at"])
    except IntegrityError as exc:
        # An answer is already active (or another send won a race): the
        # constraint fired. Databases word the error differently, so ask the
        # data, not the message.
        if not conversation.messages.filter(status__in=Message.ACTIVE_STATUSES).exists():
            raise
        raise RunActive() from exc
    return SendResult(user_message, assistant_message)


def _create_answer(user_message: Message, *, created_at) -> Message:
    """A pending answer to `user_message`; its run starts once the transaction commits."""
    answer = Message(
        conversation=user_message.conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        reply_to=user_message,
        created_at=created_at,
        # The run starts in this process, so the message is born leased to it:
        # the run needs no write to claim it, and if this process dies before
        # the run starts, a sweeper ends the message when the lease lapses.
        run_owner=runs.manager.channel or "",
        run_lease_expires_at=store.lease_for_new_answer(created_at),
    )
    # The job first: it reads the history and fits it to the model's context window, and
    # the answer is stored with what that left out (or not at all, if nothing fits).
    job = runs.build_job(answer)
    answer.context_omitted_turns = job.context_omitted_turns
    answer.model = job.request.model
    answer.save(force_insert=True)
    transaction.on_commit(lambda: runs.manager.start(job))
    return answer


def _admit() -> None:
    """Refuse a new run at once when this process cannot take it (503, Retry-After)."""
    if runs.manager.draining:
        raise Unavailable("This server is shutting down; try again (another server will answer).")
    if not runs.manager.has_capacity():
        raise Overloaded()


def message_regenerate(*, message: Message) -> Message:
    """A new answer to the same user turn. The previous answer is kept (see `reply_to`).

    Any answer may be regenerated, not only the newest: the reader may be on an older
    branch, and the new answer is one more sibling of `message` there."""
    _admit()
    if message.role != Message.Role.ASSISTANT:
        raise NotAnAnswer()
    budget.ensure_budget_left(user_id=message.conversation.owner_id)
    try:
        with transaction.atomic():
            conversation = message.conversation
            if selectors.message_active(conversation=conversation) is not None:
                raise RunActive()
            user_turn = message.reply_to or selectors.message_user_turn(message=message)
            answer = _create_answer(user_turn, created_at=timezone.now())
            conversation.save(update_fields=["updated_at"])
    except IntegrityError as exc:
        if selectors.message_active(conversation=message.conversation) is None:
            raise
        raise RunActive() from exc
    return answer


def message_cancel(*, message: Message, wait: float = 0.0) -> Message:
    """Stop an answer: its run (on whichever process owns it) ends it `cancelled`.

    Waits up to `wait` seconds for the run to store its final state, and returns
    the message as stored then. Idempotent: stopping a stopped answer returns it.
    Stopping an answer that ended otherwise is a `MessageFinished` error.
    """
    if message.role != Message.Role.ASSISTANT:
        raise NotAnAnswer()
    if message.status == Message.Status.CANCELLED:
        return message
    flagged = Message.objects.filter(pk=message.pk, status__in=Message.ACTIVE_STATUSES).update(
        cancel_requested=True,
        # The first stop's time: the answer's history shows when it was asked for.
        cancel_requested_at=Coalesce("cancel_requested_at", Value(timezone.now())),
    )
    if not flagged:
        raise MessageFinished()
    message.refresh_from_db()
    runs.manager.stop(str(message.pk), message.run_owner)
    deadline = time.monotonic() + wait
    while message.is_active and time.monotonic() < deadline:
        time.sleep(0.05)
        message.refresh_from_db()
    return message


def stream_token_create(*, user, conversation: Conversation) -> StreamToken:
    return StreamToken.for_conversation(user=user, conversation=conversation)


def messages_html_fill(*, messages: Iterable[Message]) -> None:
    """Give each finished answer in `messages` its stored HTML, rendering only those whose
    HTML is missing or was made from other text or rules (`Message.html_key`).

    Called on read, for the messages about to be shown: an answer is rendered once, on its
    first read (old rows included, so no data migration renders the whole history), not on
    every view. Not at the answer's end: that is the run core's hot path (and the
    sweeper's), and many answers are only ever read live.
    """
    stale = []
    for message in messages:
        if message.role != Message.Role.ASSISTANT or message.is_active:
            continue  # user text is shown as text; live text is rendered by the page
        key = html_key(message.content)
        if message.html_key != key:
            message.html, message.html_key = render_markdown(message.content), key
            stale.append(message)
    if stale:
        # A finished answer's text does not change, so two readers filling it at once
        # store the same HTML; an edit (in the admin) changes the key and is rendered anew.
        Message.objects.bulk_update(stale, ["html", "html_key"])


# --- operators: the admin's force stop and the management commands ----------------------


def message_force_stop(*, message: Message) -> bool:
    """An operator's stop: the same as the user's (`message_cancel`), for a run on any
    process. False if the answer had already ended."""
    if not message.is_active:  # `message_cancel` returns a cancelled answer as it is
        return False
    try:
        message_cancel(message=message)
    except MessageFinished:
        return False
    return True


def runs_end_stale(*, every: bool = False, wait: float = 10.0) -> list[Message]:
    """End now every active answer whose lease has lapsed: the sweeper's work, once, on
    every such answer (not only the first hundred a sweep takes). Returns the answers
    that were active and have ended, as stored now.

    `every`: first stop every active answer, as the stop button does — a live run ends
    its answer `cancelled` and tells its viewers, on whichever process it runs — and wait
    up to `wait` seconds for them; an answer still active then has no run that heard (its
    process is gone or stalled), so its lease is made to lapse and it is swept too
    (`cancelled`, since a stop was asked).
    """
    active = Message.objects.filter(status__in=Message.ACTIVE_STATUSES)
    ids = []
    if every:
        targets = list(active)
        for message in targets:
            message_force_stop(message=message)
        ids = [message.pk for message in targets]
        deadline = time.monotonic() + wait
        while active.filter(pk__in=ids).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        lapsed = timezone.now() - timedelta(microseconds=1)
        active.filter(pk__in=ids).update(run_lease_expires_at=lapsed)
    # Expired now: what a sweeper would take (`store.expired_runs`), all of it.
    expired = list(
        active.filter(
            Q(run_lease_expires_at__lt=timezone.now()) | Q(run_lease_expires_at__isnull=True)
        ).order_by("created_at")
    )
    if expired:
        async_to_sync(end_orphans)(expired, outbox=outbox)
    ids += [message.pk for message in expired]
    return list(
        Message.objects.filter(pk__in=ids)
        .exclude(status__in=Message.ACTIVE_STATUSES)
        .order_by("created_at")
    )


@dataclass(frozen=True)
class PurgeResult:
    scanned: int  # messages with a buffer
    purged: int  # of them, the buffers deleted (or that would be, in a dry run)


def replay_buffers_purge(*, dry_run: bool = False) -> PurgeResult:
    """Delete the shared (Redis) replay buffers of answers that are no longer active — ended
    or deleted — whose text the database holds: a reconnecting client reads it from there.
    The buffers of active answers are kept.

    Buffers expire on their own (`CHAT_REPLAY_TTL_SECONDS` after their answer ends, a
    day after it starts); this frees the memory now, e.g. after a burst, or buffers whose
    end never reached Redis. An in-process buffer lives in each server's memory, which a
    command cannot reach: `ValueError`.
    """
    buffer = get_replay_buffer.build()  # a client for this loop only, closed after
    if buffer.in_process:
        raise ValueError("the replay buffer is in each server process's memory")
    return async_to_sync(_purge)(buffer, dry_run)


async def _purge(buffer, dry_run: bool) -> PurgeResult:
    scanned = purged = 0
    cursor = None
    try:
        while cursor != 0:
            cursor, ids = await buffer.scan(cursor or 0)
            if not ids:
                continue
            # A message SCAN returned twice (its keys are two, and SCAN may repeat keys)
            # is counted twice; deleting it again is harmless.
            scanned += len(ids)
            finished = ids - await sync_to_async(_active_ids)(ids)
            purged += len(finished)
            if finished and not dry_run:
                await buffer.discard(finished)
    finally:
        await buffer.aclose()
    return PurgeResult(scanned, purged)


def _active_ids(ids: set[str]) -> set[str]:
    valid = [message_id for message_id in ids if _is_uuid(message_id)]
    rows = Message.objects.filter(pk__in=valid, status__in=Message.ACTIVE_STATUSES)
    return {str(pk) for pk in rows.values_list("pk", flat=True)}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
