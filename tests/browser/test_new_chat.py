"""A new conversation in a real browser: nothing is made until the first message is sent."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import log_in, wait_until_idle
from tests.e2e.client import wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION_URL = re.compile(r"/c/([0-9a-f-]{36})/$")


def test_new_conversation_twice_makes_nothing(open_context, daphne_anthropic, user, password):
    """From a conversation, "New conversation" goes to the home page's empty composer and
    creates nothing; clicking it again there creates nothing either and leaves the
    composer focused. The sidebar gains no "Untitled conversation" rows."""
    existing = Conversation.objects.create(owner=user, title="Earlier", model="m")
    Message.objects.create(conversation=existing, role="user", content="Hi")
    page = log_in(open_context(), daphne_anthropic, user, password)
    page.goto(f"{daphne_anthropic.url}/c/{existing.pk}/")
    wait_until_idle(page)

    page.get_by_test_id("new-conversation").click()
    page.wait_for_url(f"{daphne_anthropic.url}/")
    page.get_by_test_id("new-conversation").click()
    page.wait_for_timeout(300)  # anything the clicks started has had time to arrive

    assert page.url == f"{daphne_anthropic.url}/"
    expect(page.get_by_test_id("composer-input")).to_be_focused()
    assert list(Conversation.objects.filter(owner=user)) == [existing]
    expect(page.get_by_test_id("conversation-link")).to_have_count(1)
    expect(page.get_by_text("Untitled conversation")).to_have_count(0)


def test_the_first_message_makes_the_conversation_titled_from_it(
    open_context, daphne_anthropic, user, password
):
    """The first send from the home page creates one conversation, titled from the message,
    with that message in it, and opens it; the sidebar lists it by that title."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    page.get_by_test_id("new-conversation").click()
    composer = page.get_by_test_id("composer-input")
    composer.fill("Plan a picnic   in the park")
    composer.press("Enter")
    page.wait_for_url(CONVERSATION_URL)

    (conversation,) = Conversation.objects.filter(owner=user)
    assert CONVERSATION_URL.search(page.url).group(1) == str(conversation.pk)
    assert conversation.title == "Plan a picnic in the park"
    question = conversation.messages.get(role="user")
    assert question.content == "Plan a picnic   in the park"
    wait_for_final(str(conversation.messages.get(role="assistant").pk))
    links = page.get_by_test_id("conversation-link")
    expect(links).to_have_count(1)
    expect(links.first).to_have_attribute("data-conversation-id", str(conversation.pk))
    expect(links.first).to_have_text("Plan a picnic in the park")


def test_a_refused_first_message_leaves_no_conversation_behind(
    open_context, daphne_anthropic, user, password
):
    """When the first send is refused (here: the message is too long), the conversation
    made for it is deleted again: the error shows, the draft stays, nothing is left in the
    sidebar or the database; the next try makes a fresh one."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    refusal = {"code": "content_too_long", "message": "Messages are limited to 5 characters."}
    page.route(
        re.compile(r"/api/v1/conversations/[0-9a-f-]{36}/messages/$"),
        lambda route: route.fulfill(
            status=413, content_type="application/json", body=json.dumps(refusal)
        ),
    )
    composer = page.get_by_test_id("composer-input")
    composer.fill("Hello?")
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        composer.press("Enter")
    assert deleted.value.status == 204
    expect(page.get_by_test_id("composer-error")).to_contain_text("limited to 5 characters")
    expect(composer).to_have_value("Hello?")
    assert page.url == f"{daphne_anthropic.url}/"
    assert not Conversation.objects.filter(owner=user).exists()

    page.unroute(re.compile(r"/api/v1/conversations/[0-9a-f-]{36}/messages/$"))
    page.reload()
    composer.fill("Hello again")
    composer.press("Enter")
    page.wait_for_url(CONVERSATION_URL)
    (conversation,) = Conversation.objects.filter(owner=user)
    assert conversation.title == "Hello again"
