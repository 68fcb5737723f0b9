"""The admin for operators: live runs on every process (with a force stop), usage per user
per day, and a message's run (its status history, timing, owner) on its own page.

Registered from chat/admin.py. Live runs and usage are proxy models of `Message`, so each
has its own entry and permissions in the admin index.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from . import runs, selectors, services
from .fanout import channel_process
from .models import LiveRun, Message, Usage

# How often the live-runs page reloads itself (static/chat/admin_live.js reads it).
LIVE_REFRESH_SECONDS = 5
USAGE_DEFAULT_DAYS = 30


def duration(seconds: float | None) -> str:
    """`0.8 s`, `42 s`, `3 min 05 s`, `2 h 07 min`; `-` for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def seconds_between(start, end) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def process_label(channel: str) -> str:
    """The process a run lease names: `host · pid 1234`, the full channel in the title."""
    if not channel:
        return "-"
    process = channel_process(channel)
    mine = " (this process)" if channel == runs.manager.channel else ""
    if process is None:
        return format_html(
            '<span class="chat-id" title="{}">{}</span>{}', channel, channel[-12:], mine
        )
    host, pid = process
    return format_html(
        '<span class="chat-process" title="{}">{} · pid {}</span>{}', channel, host, pid, mine
    )


def user_link(user) -> str:
    meta = user._meta
    return format_html(
        '<a href="{}">{}</a>',
        reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[user.pk]),
        user.get_username(),
    )


def conversation_link(conversation) -> str:
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:chat_conversation_change", args=[conversation.pk]),
        Truncator(str(conversation)).chars(30),
    )


def usage_url(**filters) -> str:
    return f"{reverse('admin:chat_usage_changelist')}?{urlencode(filters)}"


def _may_change_messages(request) -> bool:
    return request.user.has_perm("chat.change_message")


# --- live runs ---------------------------------------------------------------------------


@admin.register(LiveRun)
class LiveRunAdmin(admin.ModelAdmin):
    """Every answer being generated now, whichever process runs it (the database knows them
    all: each run holds a lease naming its process). Reloads itself every few seconds."""

    list_display = (
        "message_link",
        "status_cue",
        "conversation_link",
        "owner",
        "process",
        "text_so_far",
        "time_to_first_token",
        "age",
        "lease",
    )
    list_display_links = None
    list_per_page = 200
    actions = ["force_stop"]

    class Media:
        css = {"all": ("chat/admin.css",)}
        js = ("chat/admin_live.js",)

    def get_queryset(self, request):
        return selectors.live_run_list(model=LiveRun)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("chat.view_message") or _may_change_messages(request)

    def has_change_permission(self, request, obj=None):
        return _may_change_messages(request)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A run's page is its message's page.
        return redirect("admin:chat_message_change", object_id)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "title": "Live runs",
            "subtitle": f"Answers being generated now, on every process "
            f"(this page reloads every {LIVE_REFRESH_SECONDS} s)",
        }
        return super().changelist_view(request, extra_context)

    @admin.action(description="Force stop the selected runs", permissions=["change"])
    def force_stop(self, request, queryset):
        stopped = ended = 0
        for message in queryset:
            if services.message_force_stop(message=message):
                stopped += 1
            else:
                ended += 1
        if stopped:
            self.message_user(
                request,
                f"Asked {stopped} run{'s' if stopped != 1 else ''} to stop: each ends its "
                "answer `cancelled` within a second or so, wherever it runs.",
                messages.SUCCESS,
            )
        if ended:
            self.message_user(request, f"{ended} had already ended.", messages.WARNING)

    @admin.display(description="answer")
    def message_link(self, obj: Message) -> str:
        return format_html(
            '<a href="{}"><span class="chat-id" title="{}">{}</span></a>',
            reverse("admin:chat_message_change", args=[obj.pk]),
            obj.pk,
            str(obj.pk)[:8],
        )

    @admin.display(description="status")
    def status_cue(self, obj: Message) -> str:
        stop = " (stop requested)" if obj.cancel_requested else ""
        return format_html(
            '<span class="chat-status chat-status-{}">{}</span>{}', obj.status, obj.status, stop
        )

    @admin.display(description="conversation")
    def conversation_link(self, obj: Message) -> str:
        return conversation_link(obj.conversation)

    @admin.display(description="owner")
    def owner(self, obj: Message) -> str:
        return user_link(obj.conversation.owner)

    @admin.display(description="process")
    def process(self, obj: Message) -> str:
        return process_label(obj.run_owner)

    @admin.display(description="text so far")
    def text_so_far(self, obj: Message) -> str:
        # Characters, as of the last checkpoint: output tokens are reported at the end.
        return f"{obj.text_length:,} chars"

    @admin.display(description="first token after")
    def time_to_first_token(self, obj: Message) -> str:
        return duration(seconds_between(obj.created_at, obj.first_token_at))

    @admin.display(description="age")
    def age(self, obj: Message) -> str:
        return duration(seconds_between(obj.created_at, timezone.now()))

    @admin.display(description="lease")
    def lease(self, obj: Message) -> str:
        expires = obj.run_lease_expires_at
        if expires is None:
            return "none"
        left = (expires - timezone.now()).total_seconds()
        if left >= 0:
            return f"held ({duration(left)} left)"
        # The sweeper of a live process ends it within a heartbeat: if it stays, no
        # process sweeps (or none is running): `manage.py end_stale_runs`.
        return format_html(
            '<span class="chat-status-trouble">lapsed {} ago</span>', duration(-left)
        )


# --- usage -------------------------------------------------------------------------------


class UsageFilter(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    user = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_user(self):
        value = self.cleaned_data["user"]
        if not value:
            return None
        try:
            return get_user_model()._meta.pk.to_python(value)
        except ValidationError:
            raise ValidationError("Not a user id.") from None

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise ValidationError("The first day is after the last.")
        return data


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    """Messages, answers and tokens per user per UTC day (the days of the token budget)."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("chat.view_message") or _may_change_messages(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        # The report is the changelist; no object pages.
        view = self.admin_site.admin_view(self.report_view)
        info = self.opts.app_label, self.opts.model_name
        return [path("", view, name=f"{info[0]}_{info[1]}_changelist")]

    def report_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.now().date()
        data = request.GET.copy()
        if "since" not in data and "until" not in data:
            data["since"] = (today - timedelta(days=USAGE_DEFAULT_DAYS - 1)).isoformat()
        form = UsageFilter(data)
        rows, user = [], None
        if form.is_valid():
            filters = form.cleaned_data
            if filters["user"] is not None:
                user = get_user_model().objects.filter(pk=filters["user"]).first()
            rows = selectors.usage_by_user_day(
                since=filters["since"], until=filters["until"], user_id=filters["user"]
            )
            dates = {k: v.isoformat() for k in ("since", "until") if (v := filters[k])}
            for row in rows:
                row["usage_url"] = usage_url(user=row["user_id"], **dates)
        totals = {
            key: sum(row[key] for row in rows)
            for key in ("messages", "answers", "input_tokens", "output_tokens")
        }
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Usage per user per day (UTC)",
            "subtitle": f"of {user.get_username()}" if user else None,
            "form": form,
            "rows": rows,
            "totals": totals,
            "user_filter": user,
            "changelist_url": reverse("admin:chat_usage_changelist"),
        }
        return TemplateResponse(request, "admin/chat/usage.html", context)
