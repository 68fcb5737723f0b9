"""The admin: conversations and messages as an admin looking for trouble reads them.

Message ids show as their first 8 hex characters (the full id in the title attribute and
in search), content as a one-line preview, and the list filters by what goes wrong
(failed, interrupted, with an error code), by model, by day and by owner. A conversation's
page shows its latest messages only and links to the full list.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.db.models.functions import Left
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.timezone import localtime

from . import opsadmin  # also registers the operators' pages: live runs, usage
from .models import Conversation, Message

PREVIEW_CHARS = 80
INLINE_MESSAGES = 20  # a conversation's page shows this many of its latest messages
OWNER_CHOICES = 10  # the owner filter offers this many of the week's most active users

_MESSAGE_READONLY = (
    "id",
    "role",
    "status",
    "stop_reason",
    "model",
    "input_tokens",
    "output_tokens",
    "usage_estimated",
    "context_omitted_turns",
    "error_code",
    "error_message",
    "created_at",
    "completed_at",
)

# The statuses an admin looks for first stand out (chat/admin.css); each status also
# has a class of its own.
_TROUBLE = {Message.Status.FAILED, Message.Status.INTERRUPTED}


def _short_id(value) -> str:
    return format_html('<span class="chat-id" title="{}">{}</span>', value, str(value)[:8])


def _status(message: Message) -> str:
    trouble = "trouble" if message.status in _TROUBLE else "ok"
    return format_html(
        '<span class="chat-status chat-status-{} chat-status-{}">{}</span>',
        trouble,
        message.status,
        message.status,
    )


def _preview(text: str) -> str:
    """One line of at most PREVIEW_CHARS characters: whitespace and newlines folded."""
    return Truncator(" ".join(text.split())).chars(PREVIEW_CHARS)


def _tokens(message: Message) -> str:
    if message.input_tokens is None and message.output_tokens is None:
        return "-"
    # "~": estimates (the answer ended before the model reported its usage).
    mark = "~" if message.usage_estimated else ""
    return " / ".join(
        "-" if n is None else f"{mark}{n}" for n in (message.input_tokens, message.output_tokens)
    )


def _moment(at) -> str:
    """To the millisecond: the steps of an answer are often within one second."""
    return localtime(at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def messages_url(**filters) -> str:
    """The message list, filtered (e.g. `conversation__id__exact=<id>`)."""
    return f"{reverse('admin:chat_message_changelist')}?{urlencode(filters)}"


class _LatestMessagesFormSet(BaseInlineFormSet):
    """The conversation's latest INLINE_MESSAGES messages, oldest first.

    The queryset cannot be sliced in the inline's `get_queryset` (the formset filters it by
    conversation afterwards), so the formset cuts it once it is filtered."""

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            newest = super().get_queryset().order_by("-created_at", "-id")[:INLINE_MESSAGES]
            self._latest = list(newest)[::-1]
        return self._latest


class MessageInline(admin.TabularInline):
    """Read-only: a long conversation's page used to render every message as a form."""

    model = Message
    formset = _LatestMessagesFormSet
    extra = 0
    fields = ("short_id", "role", "status_cue", "preview", "tokens", "created_at")
    readonly_fields = fields
    # The id links to the message's page: the inline's own change link comes with the
    # message's `str()` above every row (hidden in chat/admin.css).
    show_change_link = False
    verbose_name_plural = f"latest {INLINE_MESSAGES} messages"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="id")
    def short_id(self, obj: Message) -> str:
        url = reverse("admin:chat_message_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, _short_id(obj.pk))

    @admin.display(description="status")
    def status_cue(self, obj: Message) -> str:
        return _status(obj)

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return _preview(obj.content)

    @admin.display(description="tokens in / out")
    def tokens(self, obj: Message) -> str:
        return _tokens(obj)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "model", "message_count", "created_at", "updated_at")
    list_filter = ("model", "owner", "messages__status")
    search_fields = ("title", "system_prompt", "owner__username", "messages__content")
    readonly_fields = ("id", "all_messages", "created_at", "updated_at")
    list_select_related = ("owner",)
    inlines = [MessageInline]
    date_hierarchy = "created_at"

    class Media:
        css = {"all": ("chat/admin.css",)}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj._message_count

    @admin.display(description="messages")
    def all_messages(self, obj: Conversation) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}">All {} messages</a> (the list below shows the latest {})',
            messages_url(conversation__id__exact=obj.pk),
            obj._message_count,
            INLINE_MESSAGES,
        )

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        # Searching messages joins them in; distinct keeps one row per conversation.
        return queryset.distinct(), False


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request, model_admin):
        return (("yes", "with an error code"), ("no", "without"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(error_code="")
        if self.value() == "no":
            return queryset.filter(error_code="")
        return queryset


class OwnerFilter(admin.SimpleListFilter):
    """By owner, without listing every user: the choices are the users with the most
    messages this week (and the one selected); any user is reachable as `?owner=<id>`
    or by searching for their username."""

    title = "owner (most active this week)"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        # Counted from this week's messages only (not every user's every message).
        since = timezone.now() - timedelta(days=7)
        recent = (
            Message.objects.filter(created_at__gte=since)
            .values_list("conversation__owner")
            .annotate(n=Count("pk"))
            .order_by("-n", "conversation__owner")[:OWNER_CHOICES]
        )
        pks = [pk for pk, _ in recent]
        selected = self._selected_pk()
        if selected is not None and selected not in pks:
            pks.append(selected)
        users = get_user_model().objects.in_bulk(pks)
        return [(str(pk), users[pk].get_username()) for pk in pks if pk in users]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        selected = self._selected_pk()
        if selected is None:  # not an id at all: nobody's
            return queryset.none()
        return queryset.filter(conversation__owner_id=selected)

    def _selected_pk(self):
        try:
            return get_user_model()._meta.pk.to_python(self.value())
        except ValidationError:
            return None


class _MessageChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list shows a preview: load the first characters, not every message's
        # whole text (up to 32,000 characters) and its rendered HTML.
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer("content", "html").annotate(
            _preview=Left("content", PREVIEW_CHARS * 4)
        )

    def get_results(self, request):
        super().get_results(request)
        for message in self.result_list:
            # Each row's checkbox is labelled with `str(message)`, which reads the first
            # characters of the text: give it those, not a query per row for the rest.
            message.content = message._preview


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "role",
        "status_cue",
        "preview",
        "conversation_link",
        "owner_link",
        "answer_model",
        "tokens",
        "created_at",
    )
    list_filter = (
        "status",
        "role",
        # The model that produced each answer (`Message.model`).
        ("model", admin.AllValuesFieldListFilter),
        "created_at",
        HasErrorFilter,
        OwnerFilter,
    )
    # `^id`: an id prefix (the 8 characters the list shows) finds the message.
    search_fields = (
        "^id",
        "content",
        "error_code",
        "error_message",
        "conversation__title",
        "=conversation__owner__username",
    )
    # The links of the message tree are shown, not edited: as form fields each would be a
    # <select> of every message stored.
    readonly_fields = (
        *_MESSAGE_READONLY,
        "conversation",
        "reply_to",
        "parent",
        "status_history",
        "timing",
        "owning_process",
        "run_lease_expires_at",
        "cancel_requested",
        "usage",
        "answer_model",
    )
    # A message's page: the message, then its run as an operator reads it (chat/opsadmin.py).
    fieldsets = (
        (
            None,
            {"fields": ("id", "conversation", "role", "status", "reply_to", "parent", "content")},
        ),
        (
            "Run",
            {
                "fields": (
                    "status_history",
                    "timing",
                    "stop_reason",
                    "error_code",
                    "error_message",
                    "usage",
                    "answer_model",
                    "context_omitted_turns",
                    "owning_process",
                    "run_lease_expires_at",
                    "cancel_requested",
                )
            },
        ),
    )
    list_select_related = ("conversation__owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    class Media:
        css = {"all": ("chat/admin.css",)}

    def get_changelist(self, request, **kwargs):
        return _MessageChangeList

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Message) -> str:
        return _short_id(obj.pk)

    @admin.display(description="status", ordering="status")
    def status_cue(self, obj: Message) -> str:
        return _status(obj)

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return format_html('<span class="chat-preview">{}</span>', _preview(obj._preview))

    @admin.display(description="conversation", ordering="conversation__title")
    def conversation_link(self, obj: Message) -> str:
        return opsadmin.conversation_link(obj.conversation)

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner_link(self, obj: Message) -> str:
        return opsadmin.user_link(obj.conversation.owner)

    @admin.display(description="model", ordering="model")
    def answer_model(self, obj: Message) -> str:
        # The model that produced the answer; none for user messages and old answers.
        return obj.model or "-"

    @admin.display(description="tokens in / out")
    def tokens(self, obj: Message) -> str:
        return _tokens(obj)

    @admin.display(description="status history")
    def status_history(self, obj: Message) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    "-" if change.at is None else _moment(change.at),
                    change.status or "-",
                    change.detail,
                )
                for change in obj.status_history()
            ),
        )
        return format_html('<table class="chat-history">{}</table>', rows)

    @admin.display(description="timing")
    def timing(self, obj: Message) -> str:
        """Created → first token → ended, with the durations between."""
        first = opsadmin.duration(opsadmin.seconds_between(obj.created_at, obj.first_token_at))
        total = opsadmin.seconds_between(obj.created_at, obj.completed_at)
        if obj.is_active:
            total = opsadmin.seconds_between(obj.created_at, timezone.now())
        generating = opsadmin.seconds_between(obj.first_token_at, obj.completed_at)
        return format_html(
            "first token after {}; generating for {}; {} {}",
            first,
            opsadmin.duration(generating),
            "running for" if obj.is_active else "ended after",
            opsadmin.duration(total),
        )

    @admin.display(description="owning process")
    def owning_process(self, obj: Message) -> str:
        return opsadmin.process_label(obj.run_owner)

    @admin.display(description="usage")
    def usage(self, obj: Message) -> str:
        return format_html(
            "{} tokens in / out; {} characters", _tokens(obj), f"{len(obj.content):,}"
        )
