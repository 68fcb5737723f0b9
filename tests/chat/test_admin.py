"""The message admin reads at a glance: short ids, a one-line preview, links to the
conversation and the owner, filters for trouble, and a capped inline on conversations."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.admin import INLINE_MESSAGES, OWNER_CHOICES, PREVIEW_CHARS, OwnerFilter
from chat.models import Conversation, Message
from tests.e2e.admin import _FormFields

CHANGELIST = "/admin/chat/message/"


def answer(conversation, status="complete", content="An answer.", **fields) -> Message:
    return Message.objects.create(
        conversation=conversation, role="assistant", status=status, content=content, **fields
    )


def rows(response) -> list[Message]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.fixture
def chat(user):
    return Conversation.objects.create(owner=user, title="Trouble ticket", model="claude-x")


@pytest.mark.django_db
def test_the_list_shows_short_ids_a_one_line_preview_and_links(admin_client, chat, user):
    """Each row: the id's first 8 characters (the full id in `title`), role, status, the
    content's first 80 characters on one line, the conversation and owner linking to their
    admin pages, the model, tokens and when. No cell holds a whole UUID."""
    long = "First line\n\nsecond   line " + "x" * 200
    message = answer(chat, content=long, model="claude-x", input_tokens=12, output_tokens=345)

    response = admin_client.get(CHANGELIST)
    html = response.content.decode()
    assert rows(response) == [message]
    full = str(message.pk)
    assert f'<span class="chat-id" title="{full}">{full[:8]}</span>' in html
    # The whole id appears only in attributes (title, the row's link and checkbox), never as
    # text a column would wrap.
    assert not re.search(rf">[^<]*{full}[^<]*<", html)
    # Each row's checkbox is still labelled with the message's str() (its text's start).
    assert 'aria-label="Select this object for an action - assistant complete: First line' in html
    preview = re.search(r'<span class="chat-preview">([^<]*)</span>', html)[1]
    assert preview.startswith("First line second line xxx")
    assert len(preview) == PREVIEW_CHARS and preview.endswith("…")
    conversation_url = reverse("admin:chat_conversation_change", args=[chat.pk])
    assert f'<a href="{conversation_url}">Trouble ticket</a>' in html
    user_url = reverse("admin:auth_user_change", args=[user.pk])
    assert f'<a href="{user_url}">{user.username}</a>' in html
    cells = dict(re.findall(r'<t[dh] class="field-(\w+)[^"]*">(.*?)</t[dh]>', html))
    assert list(cells) == [
        "short_id",
        "role",
        "status_cue",
        "preview",
        "conversation_link",
        "owner_link",
        "answer_model",
        "tokens",
        "created_at",
    ]
    assert (cells["role"], cells["answer_model"], cells["tokens"]) == (
        "Assistant",
        "claude-x",
        "12 / 345",
    )
    # Its stylesheet is a static file (the CSP allows no inline style).
    assert '<link href="/static/chat/admin.css"' in html
    assert "style=" not in html.split('id="result_list"')[1].split("</table>")[0]


@pytest.mark.django_db
def test_failed_and_interrupted_answers_stand_out(admin_client, chat):
    """Their status cells have a class of their own (in colour with a mark, chat/admin.css)."""
    answer(chat, status="failed", content="", error_code="upstream_overloaded")
    answer(chat, status="interrupted", content="Half", input_tokens=7)
    answer(chat, status="cancelled", content="Stopped")
    html = admin_client.get(CHANGELIST).content.decode()
    # An output count missing (an answer from before estimates were stored) shows "-".
    assert '<td class="field-tokens">7 / -</td>' in html
    assert 'class="chat-status chat-status-trouble chat-status-failed">failed<' in html
    assert 'class="chat-status chat-status-trouble chat-status-interrupted">interrupted<' in html
    assert 'class="chat-status chat-status-ok chat-status-cancelled">cancelled<' in html


@pytest.mark.django_db
def test_estimated_usage_is_marked(admin_client, chat):
    """Usage stored as estimates (the answer ended before the model reported it) reads "~"."""
    answer(
        chat,
        status="cancelled",
        model="claude-x",
        input_tokens=3,
        output_tokens=5,
        usage_estimated=True,
    )
    html = admin_client.get(CHANGELIST).content.decode()
    assert '<td class="field-tokens">~3 / ~5</td>' in html
    assert '<td class="field-answer_model">claude-x</td>' in html


@pytest.mark.django_db
def test_the_filters_find_trouble(admin_client, chat, user, django_user_model):
    """By status, role, model, day and error code, each listing only what it names."""
    failed = answer(chat, status="failed", content="", error_code="upstream_overloaded")
    interrupted = answer(chat, status="interrupted", content="Half", error_code="run_lost")
    fine = answer(chat)
    question = Message.objects.create(conversation=chat, role="user", content="Hi")
    other_model = Conversation.objects.create(owner=user, model="claude-y")
    old = answer(other_model, model="claude-y", created_at=timezone.now() - timedelta(days=40))

    assert rows(admin_client.get(CHANGELIST, {"status__exact": "failed"})) == [failed]
    assert rows(admin_client.get(CHANGELIST, {"status__exact": "interrupted"})) == [interrupted]
    assert rows(admin_client.get(CHANGELIST, {"role__exact": "user"})) == [question]
    assert set(rows(admin_client.get(CHANGELIST, {"has_error": "yes"}))) == {failed, interrupted}
    assert set(rows(admin_client.get(CHANGELIST, {"has_error": "no"}))) == {fine, question, old}
    # By the model that produced the answer (not the conversation's model now).
    assert rows(admin_client.get(CHANGELIST, {"model": "claude-y"})) == [old]
    # By day: the date hierarchy and the "created" filter.
    day = old.created_at
    by_day = {"created_at__day": day.day, "created_at__month": day.month}
    assert rows(admin_client.get(CHANGELIST, {**by_day, "created_at__year": day.year})) == [old]
    since = (timezone.now() - timedelta(days=7)).isoformat()
    recent = set(rows(admin_client.get(CHANGELIST, {"created_at__gte": since})))
    assert recent == {failed, interrupted, fine, question}
    html = admin_client.get(CHANGELIST).content.decode()
    for title in ("By status", "By role", "By model", "By created at", "By error"):
        assert title in html, title


@pytest.mark.django_db
def test_the_owner_filter_offers_the_most_active_users_not_all(
    admin_client, chat, user, django_user_model
):
    """The owner filter lists at most OWNER_CHOICES users (this week's most active), and
    filters by any user's id; a value that is not an id lists nothing rather than failing."""
    answer(chat)
    quiet = []
    for n in range(OWNER_CHOICES + 3):
        someone = django_user_model.objects.create_user(username=f"user{n:02}")
        conversation = Conversation.objects.create(owner=someone, model="m")
        answer(conversation, created_at=timezone.now() - timedelta(days=30))
        quiet.append(someone)
    for n in range(OWNER_CHOICES):  # ten users active this week, alice the most
        answer(Conversation.objects.create(owner=quiet[n], model="m"))
    answer(chat)

    response = admin_client.get(CHANGELIST)
    owner_filter = next(
        f for f in response.context["cl"].filter_specs if isinstance(f, OwnerFilter)
    )
    offered = [label for _, label in owner_filter.lookup_choices]
    assert len(offered) == OWNER_CHOICES and offered[0] == user.username
    assert quiet[-1].username not in offered

    response = admin_client.get(CHANGELIST, {"owner": quiet[-1].pk})
    assert [m.conversation.owner for m in rows(response)] == [quiet[-1]]
    # The selected owner is offered too, so the filter shows what is selected.
    owner_filter = next(
        f for f in response.context["cl"].filter_specs if isinstance(f, OwnerFilter)
    )
    assert [label for _, label in owner_filter.lookup_choices][-1] == quiet[-1].username
    assert rows(admin_client.get(CHANGELIST, {"owner": "alice"})) == []


@pytest.mark.django_db
def test_an_id_prefix_finds_the_message(admin_client, chat):
    """The 8 characters the list shows, typed into the search box, find the message."""
    wanted, other = answer(chat, content="one"), answer(chat, content="two")
    prefix = str(wanted.pk)[:8]
    assert rows(admin_client.get(CHANGELIST, {"q": prefix})) == [wanted]
    assert rows(admin_client.get(CHANGELIST, {"q": str(wanted.pk)})) == [wanted]
    assert other not in rows(admin_client.get(CHANGELIST, {"q": prefix.upper()}))


@pytest.mark.django_db
def test_a_conversation_page_shows_its_latest_messages_and_links_to_all(admin_client, chat):
    """The inline is capped at INLINE_MESSAGES, the newest ones, oldest first and read-only;
    a link opens the message list filtered to this conversation."""
    start = timezone.now() - timedelta(hours=1)
    messages = [
        answer(chat, content=f"message {n:02}", created_at=start + timedelta(seconds=n))
        for n in range(INLINE_MESSAGES + 5)
    ]
    other = answer(Conversation.objects.create(owner=chat.owner, model="m"), content="else")

    response = admin_client.get(reverse("admin:chat_conversation_change", args=[chat.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    shown = re.findall(r'<td class="field-preview">\s*<p>message (\d\d)</p>', html)
    assert shown == [f"{n:02}" for n in range(5, INLINE_MESSAGES + 5)]
    inline = html.split('id="messages-group"')[1]
    assert "<textarea" not in inline  # read-only
    newest = messages[-1]
    assert (
        f'<a href="{reverse("admin:chat_message_change", args=[newest.pk])}">'
        f'<span class="chat-id" title="{newest.pk}">{str(newest.pk)[:8]}</span></a>'
    ) in inline
    link = reverse("admin:chat_message_changelist") + f"?conversation__id__exact={chat.pk}"
    assert f'<a href="{link}">All {len(messages)} messages</a>' in html
    listed = rows(admin_client.get(link))
    assert set(listed) == set(messages) and other not in listed


@pytest.mark.django_db
def test_a_conversation_with_more_messages_than_shown_saves(admin_client, chat):
    """The read-only, capped inline does not get in the way of saving the conversation:
    the title changes, no message does."""
    for n in range(INLINE_MESSAGES + 2):
        answer(chat, content=f"message {n:02}")
    url = reverse("admin:chat_conversation_change", args=[chat.pk])
    parser = _FormFields("conversation_form")
    parser.feed(admin_client.get(url).content.decode())
    fields: dict[str, list[str]] = {}
    for name, value in parser.fields:
        fields.setdefault(name, []).append(value)
    assert fields["messages-INITIAL_FORMS"] == [str(INLINE_MESSAGES)]
    fields["title"] = ["Renamed"]

    response = admin_client.post(url, fields)
    assert response.status_code == 302, response.content.decode()[:2000]
    chat.refresh_from_db()
    assert chat.title == "Renamed"
    assert sorted(chat.messages.values_list("content", flat=True)) == [
        f"message {n:02}" for n in range(INLINE_MESSAGES + 2)
    ]


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_for_many_rows(admin_client, chat, user):
    """No query per row: conversations and owners are joined, the preview is cut in SQL."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(captured)

    answer(chat)
    few = queries()
    for n in range(30):
        answer(Conversation.objects.create(owner=user, title=f"chat {n}", model="m"), "failed")
    assert queries() == few
