"""Editing a sent message: messages as a tree, its default branch, the model's history
along a branch, the send's `parent`, the edit endpoint and the page's first view."""

from __future__ import annotations

import importlib
import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from chat import selectors, services
from chat.branches import default_branch
from chat.errors import ContentTooLong, InvalidParent, NotAUserMessage, RunActive
from chat.models import Message

pytestmark = pytest.mark.django_db


def finish(message: Message, content: str) -> None:
    Message.objects.filter(pk=message.pk).update(status=Message.Status.COMPLETE, content=content)
    message.refresh_from_db()


def history(answer: Message) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in selectors.message_history_for_run(message=answer)]


def turn(conversation, content: str, answer: str, **kwargs):
    sent = services.message_send(conversation=conversation, content=content, **kwargs)
    finish(sent.assistant_message, answer)
    return sent


# --- the tree and its default branch --------------------------------------------------------


def node(role: str, *, link: Message | None = None, at: int) -> Message:
    start = timezone.now()
    return Message(
        pk=uuid.uuid4(),
        role=role,
        parent=link if role == "user" else None,
        reply_to=link if role == "assistant" else None,
        created_at=start + timedelta(seconds=at),
    )


def test_the_default_branch_leads_to_the_newest_message():
    """At each branch point the child whose subtree holds the newest message is shown, even
    when it is the older sibling; every message knows its place among its siblings."""
    q1 = node("user", at=0)
    a1 = node("assistant", link=q1, at=1)
    q2 = node("user", link=a1, at=2)
    a2 = node("assistant", link=q2, at=3)
    q2_edit = node("user", link=a1, at=4)  # an edit of q2: a second branch
    a2_edit = node("assistant", link=q2_edit, at=5)
    a2_again = node("assistant", link=q2, at=6)  # back on branch 1: a2 regenerated
    messages = [q1, a1, q2, a2, q2_edit, a2_edit, a2_again]

    places = default_branch(messages)

    assert [places[m.pk].visible for m in messages] == [1, 1, 1, 0, 0, 0, 1]
    assert (places[q2.pk].number, places[q2.pk].siblings) == (1, 2)
    assert (places[q2_edit.pk].number, places[q2_edit.pk].siblings) == (2, 2)
    assert (places[a2_again.pk].number, places[a2_again.pk].siblings) == (2, 2)
    assert (places[q1.pk].number, places[q1.pk].siblings) == (1, 1)


def test_edits_of_the_first_message_are_siblings_at_the_root():
    q1 = node("user", at=0)
    a1 = node("assistant", link=q1, at=1)
    q1_edit = node("user", at=2)
    a1_edit = node("assistant", link=q1_edit, at=3)

    places = default_branch([q1, a1, q1_edit, a1_edit])

    assert [places[m.pk].visible for m in (q1, a1, q1_edit, a1_edit)] == [0, 0, 1, 1]
    assert places[q1_edit.pk].siblings == 2


def test_a_message_whose_parent_is_not_loaded_starts_the_path():
    """A page shows a window of the history: its first turn hangs under an answer it does
    not have, and still starts the visible path."""
    earlier = node("assistant", at=0)
    q = node("user", link=earlier, at=1)
    a = node("assistant", link=q, at=2)

    places = default_branch([q, a])

    assert places[q.pk].visible and places[a.pk].visible


# --- sends, edits and the model's history --------------------------------------------------


def test_a_send_follows_the_newest_answer_by_default(conversation):
    first = turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")
    assert first.user_message.parent_id is None
    assert second.user_message.parent_id == first.assistant_message.pk


def test_an_edit_is_a_sibling_with_its_own_answer(conversation):
    """An edit stores a new user message with the edited one's parent and a pending
    answer; the edited message and its answer are kept."""
    first = turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")

    edited = services.message_edit(message=second.user_message, content="Q2, better")

    assert edited.user_message.parent_id == first.assistant_message.pk
    assert edited.user_message.content == "Q2, better"
    assert edited.assistant_message.reply_to_id == edited.user_message.pk
    assert edited.assistant_message.status == Message.Status.PENDING
    assert Message.objects.filter(pk=second.assistant_message.pk).exists()
    assert history(edited.assistant_message) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2, better"),
    ]


def test_editing_the_first_message_starts_a_new_root(conversation):
    first = turn(conversation, "Q1", "A1")
    edited = services.message_edit(message=first.user_message, content="Q1 again")
    assert edited.user_message.parent_id is None
    assert history(edited.assistant_message) == [("user", "Q1 again")]


def test_a_send_continues_the_branch_it_names(conversation):
    """Sending after the reader switched back to branch 1 continues branch 1: the model
    sees that branch, not the newer edit."""
    turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")
    edited = services.message_edit(message=second.user_message, content="Q2 edited")
    finish(edited.assistant_message, "A2 edited")

    third = services.message_send(
        conversation=conversation, content="Q3", parent_id=second.assistant_message.pk
    )

    assert third.user_message.parent_id == second.assistant_message.pk
    assert history(third.assistant_message) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
        ("user", "Q3"),
    ]


def test_the_history_walks_the_path_of_regenerations_it_chose(conversation):
    """A branch runs through the attempt it followed, not the newest attempt of each turn;
    an empty answer on the path is left out."""
    first = turn(conversation, "Q1", "first try")
    retry = services.message_regenerate(message=first.assistant_message)
    finish(retry, "second try")
    after_first = services.message_send(
        conversation=conversation, content="Q2", parent_id=first.assistant_message.pk
    )
    assert history(after_first.assistant_message) == [
        ("user", "Q1"),
        ("assistant", "first try"),
        ("user", "Q2"),
    ]
    Message.objects.filter(pk=after_first.assistant_message.pk).update(
        status=Message.Status.FAILED, content=""
    )
    nxt = services.message_send(conversation=conversation, content="Q3")
    assert history(nxt.assistant_message) == [
        ("user", "Q1"),
        ("assistant", "first try"),
        ("user", "Q2"),
        ("user", "Q3"),
    ]


def test_the_history_is_one_query(conversation, django_assert_num_queries):
    for n in range(5):
        turn(conversation, f"Q{n}", f"A{n}")
    sent = services.message_send(conversation=conversation, content="last")
    with django_assert_num_queries(1):
        assert len(selectors.message_history_for_run(message=sent.assistant_message)) == 11


def test_a_loop_made_by_hand_does_not_hang_the_history(conversation):
    """Links edited by hand into a loop (a message following its own answer) end the walk."""
    first = turn(conversation, "Q1", "A1")
    Message.objects.filter(pk=first.user_message.pk).update(parent=first.assistant_message)
    retry = services.message_regenerate(message=first.assistant_message)
    assert history(retry) == [("assistant", "A1"), ("user", "Q1")]


def test_edit_and_send_refusals(conversation, other_user, settings):
    first = turn(conversation, "Q1", "A1")
    with pytest.raises(NotAUserMessage):
        services.message_edit(message=first.assistant_message, content="no")
    settings.CHAT_MAX_MESSAGE_CHARS = 5
    with pytest.raises(ContentTooLong):
        services.message_edit(message=first.user_message, content="too long")
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    elsewhere = services.conversation_create(owner=other_user)
    foreign = turn(elsewhere, "theirs", "their answer")
    for parent in (first.user_message.pk, foreign.assistant_message.pk, uuid.uuid4()):
        with pytest.raises(InvalidParent):
            services.message_send(conversation=conversation, content="Q", parent_id=parent)
    services.message_edit(message=first.user_message, content="Q1 again")
    with pytest.raises(RunActive):
        services.message_edit(message=first.user_message, content="and again")
    assert conversation.messages.count() == 4


def test_the_migration_links_a_linear_history(conversation):
    """Rows stored before branches (no `parent`; the oldest answers without `reply_to`)
    are linked as the single line they were."""
    migration = importlib.import_module("chat.migrations.0005_message_parent")
    now = timezone.now()
    rows = [
        Message.objects.create(
            conversation=conversation,
            role=role,
            content=role,
            created_at=now + timedelta(seconds=n),
            reply_to=None,
        )
        for n, role in enumerate(["user", "assistant", "user", "assistant", "assistant", "user"])
    ]
    Message.objects.filter(pk=rows[4].pk).update(reply_to=rows[2])

    migration.link_the_linear_history(apps, None)

    stored = {m.pk: m for m in conversation.messages.all()}
    links = [(stored[m.pk].parent_id, stored[m.pk].reply_to_id) for m in rows]
    assert links == [
        (None, None),
        (None, rows[0].pk),
        (rows[1].pk, None),
        (None, rows[2].pk),
        (None, rows[2].pk),
        (rows[4].pk, None),
    ]


# --- the API ------------------------------------------------------------------------------


def edit_url(message_id) -> str:
    return reverse("message-edit", kwargs={"message_id": message_id})


def messages_url(conversation) -> str:
    return reverse("message-list", kwargs={"conversation_id": conversation.pk})


def test_edit_is_201_with_both_messages(api_client, conversation):
    first = turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")

    response = api_client.post(
        edit_url(second.user_message.pk), {"content": "Q2 edited"}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user_message"]["content"] == "Q2 edited"
    assert body["user_message"]["parent"] == str(first.assistant_message.pk)
    assert body["assistant_message"]["reply_to"] == body["user_message"]["id"]
    assert body["assistant_message"]["status"] == "pending"
    assert body["assistant_message"]["parent"] is None


def test_the_history_lists_each_messages_parent(api_client, conversation):
    first = turn(conversation, "Q1", "A1")
    turn(conversation, "Q2", "A2")
    results = api_client.get(messages_url(conversation)).json()["results"]
    assert [m["parent"] for m in results] == [None, None, str(first.assistant_message.pk), None]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": "   \u200b"}, 400, "invalid"),
        ({}, 400, "invalid"),
        ({"content": "x" * 101}, 413, "content_too_long"),
    ],
)
def test_edit_validates_content_as_a_send_does(
    api_client, conversation, settings, body, status, code
):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    first = turn(conversation, "Q1", "A1")
    response = api_client.post(edit_url(first.user_message.pk), body, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code
    assert conversation.messages.count() == 2


def test_editing_an_answer_is_400(api_client, conversation):
    first = turn(conversation, "Q1", "A1")
    response = api_client.post(
        edit_url(first.assistant_message.pk), {"content": "x"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "not_a_user_message"


def test_editing_another_users_or_a_missing_message_is_404(api_client, other_user):
    elsewhere = services.conversation_create(owner=other_user)
    theirs = turn(elsewhere, "theirs", "their answer")
    for message_id in (theirs.user_message.pk, uuid.uuid4()):
        response = api_client.post(edit_url(message_id), {"content": "mine"}, format="json")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert elsewhere.messages.count() == 2


def test_editing_while_an_answer_streams_is_409(api_client, conversation):
    first = turn(conversation, "Q1", "A1")
    running = services.message_send(conversation=conversation, content="Q2")
    Message.objects.filter(pk=running.assistant_message.pk).update(status="streaming")
    response = api_client.post(edit_url(first.user_message.pk), {"content": "x"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "run_active"


def test_a_send_stores_the_parent_it_names(api_client, conversation):
    first = turn(conversation, "Q1", "A1")
    turn(conversation, "Q2", "A2")
    response = api_client.post(
        messages_url(conversation),
        {"content": "Q2'", "parent": str(first.assistant_message.pk)},
        format="json",
    )
    assert response.status_code == 201, response.content
    stored = Message.objects.get(pk=response.json()["user_message"]["id"])
    assert stored.parent_id == first.assistant_message.pk


@pytest.mark.parametrize("which", ["user message", "unknown", "not a uuid"])
def test_a_send_whose_parent_is_not_an_answer_here_is_400(api_client, conversation, which):
    first = turn(conversation, "Q1", "A1")
    parent = {
        "user message": str(first.user_message.pk),
        "unknown": str(uuid.uuid4()),
        "not a uuid": "nope",
    }[which]
    response = api_client.post(
        messages_url(conversation), {"content": "Q2", "parent": parent}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == ("invalid" if which == "not a uuid" else "invalid_parent")
    assert conversation.messages.count() == 2


def test_edit_is_throttled_with_sends(api_client, conversation, settings):
    """Edits share the send throttle's scope."""
    from chat.api.views import MessageEditApi, MessageListCreateApi

    assert MessageEditApi.throttle_scope == MessageListCreateApi.throttle_scope
    assert MessageEditApi.starts_a_run


# --- the page's first view -------------------------------------------------------------------


def test_the_page_shows_the_newest_branch_with_switchers_on_the_edited_turn(
    client, user, conversation
):
    first = turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")
    edited = services.message_edit(message=second.user_message, content="Q2 edited")
    finish(edited.assistant_message, "A2 edited")
    client.force_login(user)

    html = client.get(
        reverse("chat:conversation", kwargs={"conversation_id": conversation.pk})
    ).content.decode()

    from tests.chat.test_pages import by_testid

    bubbles = {b["data-message-id"]: b for b in by_testid(html, "message")}
    hidden = {pk for pk, b in bubbles.items() if "hidden" in b}
    assert hidden == {str(second.user_message.pk), str(second.assistant_message.pk)}
    assert bubbles[str(edited.user_message.pk)]["data-parent"] == str(first.assistant_message.pk)
    assert ">1 / 2</span>" in html and ">2 / 2</span>" in html
    assert 'aria-label="Previous version"' in html


def test_the_admin_shows_a_messages_links_without_a_select_of_every_message(
    admin_client, conversation
):
    first = turn(conversation, "Q1", "A1")
    second = turn(conversation, "Q2", "A2")
    url = reverse("admin:chat_message_change", args=[second.user_message.pk])
    html = admin_client.get(url).content.decode()
    assert 'name="reply_to"' not in html and 'name="parent"' not in html
    assert str(first.assistant_message) in html
