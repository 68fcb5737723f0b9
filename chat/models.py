"""Conversations and their messages: the durable record of every chat."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.db.models import OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone


class ConversationQuerySet(models.QuerySet):
    def visible_to(self, user) -> ConversationQuerySet:
        """The conversations `user` may see: only their own (anonymous users see none)."""
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(owner_id=user.pk)

    def with_usage(self) -> ConversationQuerySet:
        """Annotate `input_tokens` and `output_tokens`: the totals of each conversation's
        answers, one aggregate subquery each (by the (conversation, created_at) index), so a
        page of conversations costs no query per conversation or per message."""
        answers = (
            Message.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
        )
        return self.annotate(
            **{
                field: Coalesce(Subquery(answers.annotate(total=Sum(field)).values("total")), 0)
                for field in ("input_tokens", "output_tokens")
            }
        )


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    model = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Where the conversation is listed: "Pinned" above the rest, or "Archived" (left out of
    # the list, still found by search). One place at a time (the constraint below).
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            # The sidebar's list: a user's unarchived (or archived) ones, pinned first.
            models.Index(
                fields=["owner", "archived", "-pinned", "-updated_at"], name="conversation_list"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(pinned=True, archived=True), name="pinned_or_archived_not_both"
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {str(self.id)[:8]}"


# The text-search configuration of message search on PostgreSQL (chat/search.py): English
# stemming ("streams" finds "streaming"). The index below is built with it, and a query
# uses the index only if it spells the same expression, so it is a constant, not a setting.
SEARCH_CONFIG = "english"


def message_search_vector() -> SearchVector:
    """A message's text as PostgreSQL searches it: the index's expression and the query's."""
    return SearchVector("content", config=SEARCH_CONFIG)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    ACTIVE_STATUSES = (Status.PENDING, Status.STREAMING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    stop_reason = models.CharField(max_length=32, blank=True)
    # The model that produced an answer (an id of `CHAT_MODELS` when it ran), set when it
    # is created; "" for user messages and answers from before models were recorded.
    model = models.CharField(max_length=100, blank=True)
    # Usage, stored when an answer ends. An answer that ended before the model said (a
    # stop, a broken stream, a dead process) has estimates, and `usage_estimated` set.
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When the run received the answer's first text (stored by its first checkpoint, which
    # also marks it `streaming`, or by its end): with `created_at`, the time to first token.
    first_token_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The user turn an assistant message answers; several answers mean regenerations.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    # For a user message: the answer it follows (null for a conversation's first message).
    # Messages form a tree: several user messages with one parent are edits (branches),
    # as several answers with one `reply_to` are regenerations. Answers leave it null.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    # The run's lease: which process owns it (its control channel) and until when.
    # An active message whose lease has expired belongs to a dead process.
    run_owner = models.CharField(max_length=200, blank=True)
    run_lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # When a stop was first asked for (the stop button, the API, an operator).
    cancel_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A finished answer as sanitized HTML, rendered on its first read and kept, so page
    # views do not render markdown again (chat/services.py: messages_html_fill).
    # `html_key` names the text and the rendering rules it was made from
    # (chat/rendering.py: html_key): HTML made from other text or by other rules is
    # rendered again when next read.
    html = models.TextField(blank=True, editable=False)
    html_key = models.CharField(max_length=64, blank=True, editable=False)
    # How many earlier exchanges (a user message and its answer) were left out of what the
    # model was sent for this answer, to fit its context window (see chat/context.py).
    context_omitted_turns = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            models.Index(
                fields=["run_lease_expires_at"],
                condition=Q(status__in=["pending", "streaming"]),
                name="active_message_leases",
            ),
            # Full-text search over message text; PostgreSQL only (migration 0005 builds it
            # there and skips it elsewhere).
            GinIndex(message_search_vector(), name="message_content_search"),
        ]
        constraints = [
            # The database, not a check-then-act race, enforces one run per conversation.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status__in=["pending", "streaming"]),
                name="one_active_message_per_conversation",
            ),
            models.CheckConstraint(
                condition=Q(role="assistant") | Q(status="complete"),
                name="user_messages_are_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.status}: {self.content[:40]}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def status_history(self) -> list[StatusChange]:
        """The answer's way through its statuses, oldest first, read from its timestamps.

        An answer moves one way only — `pending` (created), `streaming` (from its first
        text), then one final status (`completed_at`) — so its timestamps are its whole
        history; a stop asked for on the way is shown where it happened. A user message is
        stored complete.
        """
        if self.role == self.Role.USER:
            return [StatusChange(self.created_at, self.Status.COMPLETE, "stored")]
        between = []
        if self.first_token_at is not None:
            between.append(StatusChange(self.first_token_at, self.Status.STREAMING, "first text"))
        elif self.status == self.Status.STREAMING:
            between.append(StatusChange(None, self.Status.STREAMING, "first checkpoint"))
        if self.cancel_requested_at is not None:
            between.append(StatusChange(self.cancel_requested_at, "", "stop requested"))
        between.sort(key=lambda change: change.at or self.created_at)
        changes = [StatusChange(self.created_at, self.Status.PENDING, "created"), *between]
        if not self.is_active:
            changes.append(StatusChange(self.completed_at, self.status, _ended(self)))
        return changes


@dataclass(frozen=True)
class StatusChange:
    at: datetime | None  # None: known to have happened, time not stored
    status: str  # "" for an event that changes no status (a stop request)
    detail: str


def _ended(message: Message) -> str:
    if message.error_code:
        return f"ended: {message.error_code}"
    if message.stop_reason:
        return f"ended: {message.stop_reason}"
    return "ended"


class LiveRun(Message):
    """The admin's view of answers being generated now, on every process (chat/opsadmin.py)."""

    class Meta:
        proxy = True
        verbose_name = "live run"

    def __str__(self) -> str:
        # Not the text's start, as `Message` has: the list does not load the text.
        return f"answer {str(self.pk)[:8]} ({self.status})"


class Usage(Message):
    """The admin's per-user, per-day usage report (chat/opsadmin.py)."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "usage"
