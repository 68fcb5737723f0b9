"""The server-rendered sidebar: its first page, pinned and archived conversations, the
current conversation wherever it is, and the hooks for search and the row menus."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.api.pagination import ConversationPagination
from chat.models import Conversation, Message
from tests.chat.test_pages import by_testid, elements

pytestmark = pytest.mark.django_db

PAGE = ConversationPagination.page_size


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="unused-pw-1")


def make_many(owner, count: int, **fields) -> list[Conversation]:
    """`count` conversations, the first the most recently updated."""
    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        [
            Conversation(owner=owner, title=f"Chat {number}", model="m", **fields)
            for number in range(count)
        ]
    )
    # The sidebar lists conversations with a message (and the one being read).
    Message.objects.bulk_create(
        [Message(conversation=c, role=Message.Role.USER, content="Hi") for c in conversations]
    )
    for number, conversation in enumerate(conversations):
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=now - timedelta(minutes=number)
        )
    return conversations


def row_ids(html: str, group: str | None = None) -> list[str]:
    rows = by_testid(html, "conversation-row")
    if group is not None:
        html = html.split(f'data-group="{group}"', 1)[1].split("</section>", 1)[0]
        rows = by_testid(html, "conversation-row")
    return [row["data-id"] for row in rows]


def test_the_sidebar_renders_the_first_page_and_where_the_next_one_is(client, alice):
    """One API page of rows is rendered; the list says where the script loads the next."""
    conversations = make_many(alice, PAGE + 3)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert row_ids(html) == [str(c.pk) for c in conversations[:PAGE]]
    (more,) = by_testid(html, "conversation-list-more")
    assert more["data-next-url"] == "/api/v1/conversations/?page=2"
    assert "hidden" not in more


def test_a_short_list_has_no_next_page(client, alice):
    """When everything fits on the first page there is nothing more to load."""
    make_many(alice, 3)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    (more,) = by_testid(html, "conversation-list-more")
    assert more["data-next-url"] == ""
    assert "hidden" in more


def test_the_current_conversation_is_shown_even_beyond_the_first_page(client, alice):
    """A conversation older than the first page is rendered anyway, highlighted, and
    marked for the script to put in its place when its page loads."""
    conversations = make_many(alice, PAGE + 5)
    old = conversations[-1]
    client.force_login(alice)

    html = client.get(reverse("chat:conversation", args=[old.pk])).content.decode()

    ids = row_ids(html)
    assert len(ids) == PAGE + 1
    assert ids[-1] == str(old.pk)
    (row,) = elements(html, "div", data_testid="conversation-row", data_id=str(old.pk))
    assert "data-out-of-order" in row
    assert "is-active" in row["class"]
    (link,) = elements(html, "a", data_testid="conversation-link", aria_current="page")
    assert link["data-conversation-id"] == str(old.pk)


def test_pinned_conversations_are_listed_in_their_own_group(client, alice):
    """Pinned conversations are under "Pinned", the rest under "Recent"."""
    pinned, recent = make_many(alice, 2)
    Conversation.objects.filter(pk=recent.pk).update(pinned=True)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert row_ids(html, "pinned") == [str(recent.pk)]
    assert row_ids(html, "recent") == [str(pinned.pk)]
    assert "hidden" not in by_testid(html, "pinned-group")[0]


def test_without_pinned_conversations_the_pinned_group_is_hidden(client, alice):
    """No pinned conversations, no "Pinned" heading."""
    make_many(alice, 2)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert "hidden" in by_testid(html, "pinned-group")[0]


def test_archived_conversations_are_not_listed_even_the_current_one(client, alice):
    """Archived conversations are left out of the list; opening one shows it, unlisted."""
    kept, gone = make_many(alice, 2)
    Conversation.objects.filter(pk=gone.pk).update(archived=True)
    client.force_login(alice)

    home = client.get(reverse("chat:home")).content.decode()
    page = client.get(reverse("chat:conversation", args=[gone.pk]))

    assert row_ids(home) == [str(kept.pk)]
    assert page.status_code == 200
    assert row_ids(page.content.decode()) == [str(kept.pk)]


def test_only_archived_conversations_still_say_there_are_none_listed(client, alice):
    """With every conversation archived, the list says it is empty."""
    (gone,) = make_many(alice, 1)
    Conversation.objects.filter(pk=gone.pk).update(archived=True)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert by_testid(html, "conversation-list-empty")


def test_the_sidebar_has_a_labelled_search_box_menus_and_an_archived_view(client, alice):
    """The hooks the page script needs: the search box (labelled, Ctrl/Cmd+K), a menu
    button per row, the menu, the archived view and its toggle, and a row template."""
    make_many(alice, 1)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    (search,) = by_testid(html, "conversation-search")
    assert elements(html, "label", **{"for": search["id"]})
    assert search["aria-keyshortcuts"] == "Control+K Meta+K"
    assert search["maxlength"] == "200"
    (button,) = by_testid(html, "conversation-menu-button")
    assert button["aria-haspopup"] == "menu"
    assert by_testid(html, "conversation-menu")
    (archived,) = by_testid(html, "archived-view")
    assert archived["data-archived-url"] == "/api/v1/conversations/?archived=true"
    assert by_testid(html, "archived-toggle")
    (template,) = elements(html, "div", in_template=True, data_testid="conversation-row")
    assert template["data-id"] == ""
