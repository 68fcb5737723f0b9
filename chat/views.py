"""Server-rendered chat pages: the sidebar, the thread and the data the page script needs.

The pages only read (and store an answer's rendered HTML the first time it is shown).
Sending, streaming, creating conversations and loading older messages go through the JSON
API and the SSE stream from the page script (`static/chat/main.js` and its modules), so the
page and every other client share one contract.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_safe
from rest_framework.utils.urls import replace_query_param

from chat import catalog
from chat.api.pagination import ConversationPagination, MessageCursorPagination
from chat.branches import default_branch
from chat.conf import chat_settings
from chat.models import Conversation, Message
from chat.rendering import render_markdown
from chat.selectors import LatestMessages, conversation_list_for_sidebar, message_list_latest
from chat.services import messages_html_fill

# The page script swaps this id for a real one to build per-object URLs.
URL_PLACEHOLDER_ID = uuid.UUID(int=0)
SIDEBAR_LABEL_CHARS = 80
SIDEBAR_COOKIE = "chatsite_sidebar"  # set by the page script when the sidebar is collapsed


def _labelled(conversations: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Annotate `first_prompt`: untitled conversations are labelled by their first question."""
    first_prompt = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER)
        .order_by("created_at")
        .values("content")[:1]
    )
    return conversations.annotate(
        first_prompt=Substr(Subquery(first_prompt), 1, SIDEBAR_LABEL_CHARS)
    )


@dataclass(frozen=True)
class Sidebar:
    """The conversation list's first page as the page renders it; the page script loads
    the next pages from the API (`next_url`) as the list is scrolled to its end."""

    pinned: list[Conversation]
    recent: list[Conversation]
    next_url: str  # the API's second page, or "" when this is all

    @property
    def conversations(self) -> list[Conversation]:
        return [*self.pinned, *self.recent]


def _sidebar(request: HttpRequest, current: Conversation | None = None) -> Sidebar:
    """The first page of the list (pinned first, archived and empty ones left out: see
    `conversation_list_for_sidebar`), and the current conversation wherever it is in the
    list, so it is always shown and highlighted (the script puts it in its place when its
    page loads). An archived current conversation is not listed: archiving hides it from
    the list, not from its reader.

    The script loads the next pages from the API, whose pages hold the empty ones too: the
    rows here are a prefix of the API's first page or more, so its second page continues
    them without a gap (rows already shown are skipped)."""
    size = ConversationPagination.page_size
    listed = conversation_list_for_sidebar(user=request.user, current_id=current and current.pk)
    rows = list(_labelled(listed)[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    if current is not None and not current.archived and current not in rows:
        current.out_of_order = True
        rows.append(current)
    for row in rows:
        row.label = row.title or row.first_prompt or "Untitled conversation"
        row.is_current = current is not None and row.pk == current.pk
    next_url = ""
    if more:
        next_url = replace_query_param(reverse("conversation-list"), "page", 2)
    return Sidebar(
        pinned=[row for row in rows if row.pinned],
        recent=[row for row in rows if not row.pinned],
        next_url=next_url,
    )


def _page_urls(
    conversation: Conversation | None, latest: LatestMessages | None = None
) -> dict[str, str]:
    """URLs the page script calls, rendered into `data-*` attributes."""
    urls = {
        "conversations_url": reverse("conversation-list"),
        "cancel_url_template": reverse("message-cancel", kwargs={"message_id": URL_PLACEHOLDER_ID}),
        "regenerate_url_template": reverse(
            "message-regenerate", kwargs={"message_id": URL_PLACEHOLDER_ID}
        ),
        "edit_url_template": reverse("message-edit", kwargs={"message_id": URL_PLACEHOLDER_ID}),
        "conversation_url_template": reverse(
            "chat:conversation", kwargs={"conversation_id": URL_PLACEHOLDER_ID}
        ),
    }
    if conversation is not None:
        ids = {"conversation_id": conversation.pk}
        urls["conversation_api_url"] = reverse("conversation-detail", kwargs=ids)
        urls["messages_url"] = reverse("message-list", kwargs=ids)
        urls["stream_token_url"] = reverse("stream-token", kwargs=ids)
        if latest is not None and latest.has_older:
            # Where the page's older-messages loader starts: the API's newest-first cursor
            # page of what comes before the messages rendered here.
            urls["older_messages_url"] = MessageCursorPagination().older_than_url(
                urls["messages_url"], latest.since
            )
    return urls


def _thread(messages: list[Message]) -> list[Message]:
    """Prepare the history for the template: rendered markdown, branches and controls.

    Regenerating keeps the earlier answers (`reply_to` is the user turn they answer), and
    editing keeps the earlier user message (`parent` is the answer both follow): the page
    shows one path through them, the default branch (`chat/branches.py`), and hides the
    rest behind "n / m" switchers. The answer that ends the path can be regenerated or
    retried. `messages` are whole turns (see `message_list_latest`), so every switcher
    of regenerations is complete.
    """
    places = default_branch(messages)
    for message in messages:
        message.model_label = catalog.label_for(message.model)
        message.body_html = ""
        place = places[message.pk]
        message.attempt, message.attempts = place.number, place.siblings
        message.off_branch = not place.visible
        message.can_regenerate = message.can_retry = False
        if message.role == Message.Role.ASSISTANT:
            # A finished answer's HTML is stored (sanitized when it was rendered); the one
            # answer still being written is rendered as it stands (the script takes over).
            if message.is_active:
                message.body_html = render_markdown(message.content)
            else:
                message.body_html = mark_safe(message.html)  # noqa: S308 - sanitized when stored
    busy = any(message.is_active for message in messages)
    shown = [message for message in messages if not message.off_branch]
    if shown and shown[-1].role == Message.Role.ASSISTANT and not busy:
        last = shown[-1]
        last.can_retry = last.status in (Message.Status.FAILED, Message.Status.INTERRUPTED)
        last.can_regenerate = not last.can_retry
    return messages


def _model_choices(current: Conversation | None) -> dict:
    """The settings dialog's model select: the offered models, and the one selected (a
    conversation whose model is no longer offered shows the one that answers it now)."""
    selected = catalog.model_for_run(current.model) if current else catalog.default_model()
    return {"models": catalog.offered_models(), "selected_model": selected.id}


def usage_summary(*, input_tokens: int, output_tokens: int) -> dict[str, str]:
    """The header's token total ("1,234") and its tooltip, splitting input and output
    (the page script writes the same after each answer)."""
    return {
        "total": f"{input_tokens + output_tokens:,}",
        "title": f"{input_tokens:,} in · {output_tokens:,} out",
    }


@require_safe
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The conversation list and an empty thread whose composer starts a new conversation."""
    sidebar = _sidebar(request)
    return render(
        request,
        "chat/chat.html",
        {
            "sidebar": sidebar,
            "conversations": sidebar.conversations,
            "conversation": None,
            "sidebar_collapsed": request.COOKIES.get(SIDEBAR_COOKIE) == "collapsed",
            "chat_messages": [],
            "urls": _page_urls(None),
            "placeholder_id": URL_PLACEHOLDER_ID,
            **_model_choices(None),
        },
    )


@require_safe
@login_required
def conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """One conversation's latest turns (the page script loads older ones as the reader
    scrolls up); someone else's (or a missing) conversation is a 404."""
    current = get_object_or_404(
        _labelled(Conversation.objects.visible_to(request.user).with_usage()), pk=conversation_id
    )
    latest = message_list_latest(conversation=current, size=chat_settings.MESSAGE_PAGE_SIZE)
    messages_html_fill(messages=latest.messages)
    chat_messages = _thread(latest.messages)
    sidebar = _sidebar(request, current)
    return render(
        request,
        "chat/chat.html",
        {
            "sidebar": sidebar,
            "conversations": sidebar.conversations,
            "conversation": current,
            "sidebar_collapsed": request.COOKIES.get(SIDEBAR_COOKIE) == "collapsed",
            "chat_messages": chat_messages,
            "busy": any(message.is_active for message in chat_messages),
            "urls": _page_urls(current, latest),
            "placeholder_id": URL_PLACEHOLDER_ID,
            **_model_choices(current),
            "usage": usage_summary(
                input_tokens=current.input_tokens, output_tokens=current.output_tokens
            ),
        },
    )
