"""A long conversation in a real browser: the page holds its latest turns and loads older
ones as the reader scrolls up, in place, whole turns at a time, until there are none left.

The server here pages by 4 messages (CHAT_MESSAGE_PAGE_SIZE), so a history of 16 is three
pages before the one the page is rendered with, and one of them ends inside a turn.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import (
    bubble,
    log_in,
    poll_until_final,
    send_with_enter,
    snapshot,
    wait_until_idle,
)
from tests.e2e.client import ChatApi, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

# Oldest first: q a question, each a an answer to the question before it (aa: regenerated).
# The page shows the last 4 (from the question at 12); the first older page (8-11) starts
# with the second attempt at turn 6, so the page reads on to 4 before showing any of it.
TURNS = "qa qa qa qaa qaa qa qa"
PARAGRAPH = "A paragraph long enough to wrap over several lines of the thread. " * 6
THREAD_IDS = "(els) => els.map((el) => el.dataset.messageId)"


def make_history(owner) -> tuple[Conversation, list[Message]]:
    """A conversation whose messages are tall (the page must scroll to reach older ones)."""
    conversation = Conversation.objects.create(owner=owner, title="Long", model="demo")
    start = timezone.now() - timedelta(hours=1)
    rows: list[Message] = []
    question = answer = None
    for kind in TURNS.replace(" ", ""):
        number = len(rows)
        body = "\n\n".join([f"**message {number:02d}**", PARAGRAPH, PARAGRAPH, PARAGRAPH])
        if number == 7:
            body += "\n\n```python\nprint('from the past')\n```"
        message = Message(
            conversation=conversation,
            role="user" if kind == "q" else "assistant",
            reply_to=None if kind == "q" else question,
            model="" if kind == "q" else "demo",
            # A single line: each question follows the answer sent last before it.
            parent=answer if kind == "q" else None,
            content=body,
            created_at=start + timedelta(seconds=number),
        )
        question = message if kind == "q" else question
        answer = message if kind == "a" else answer
        rows.append(message)
    Message.objects.bulk_create(rows)
    return conversation, rows


def shown(page) -> list[str]:
    return page.locator('[data-thread] [data-testid="message"]').evaluate_all(THREAD_IDS)


def top_of(page, message_id: str) -> float:
    return bubble(page, message_id).evaluate("(el) => el.getBoundingClientRect().top")


def scroll_to_top_measuring(page, message_id: str) -> float:
    """Scroll the thread to its top and return where `message_id` is then, measured in the
    same task, before the page can have loaded anything."""
    return page.get_by_test_id("thread").evaluate(
        """(el, id) => {
          el.scrollTop = 0;
          const anchor = document.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
          return anchor.getBoundingClientRect().top;
        }""",
        message_id,
    )


def test_scrolling_up_loads_older_turns_in_place_until_the_history_is_complete(
    open_context, daphne_short_pages, user, password
):
    """The page starts with the latest turns. Scrolling to the top loads the older ones above
    them without moving what the reader sees, a whole turn at a time (a regenerated turn
    keeps a working "n / m" switcher), rendered from the server's HTML; the next scroll
    loads the rest, then nothing more is asked for; and the conversation goes on."""
    conversation, history = make_history(user)
    ids = [str(m.pk) for m in history]
    page = log_in(open_context(), daphne_short_pages, user, password)
    older_loads: list[str] = []
    page.on("request", lambda r: older_loads.append(r.url) if "cursor=" in r.url else None)
    page.goto(f"{daphne_short_pages.url}/c/{conversation.pk}/")
    wait_until_idle(page)
    assert shown(page) == ids[12:]
    assert older_loads == []

    before = scroll_to_top_measuring(page, ids[12])
    expect(bubble(page, ids[4])).to_be_attached()
    expect(page.get_by_test_id("older-messages")).to_be_hidden()
    assert shown(page) == ids[4:]
    assert abs(top_of(page, ids[12]) - before) <= 1, "the thread jumped when older turns came"
    assert len(older_loads) == 2  # the first page ended inside turn 6: one more was read
    # Answers loaded from the API show their model's label, as the page's own do.
    for answer in (ids[5], ids[13]):
        expect(bubble(page, answer).get_by_test_id("message-model")).to_have_text("demo model")

    for first, second in ((ids[7], ids[8]), (ids[10], ids[11])):
        expect(bubble(page, first)).to_be_hidden()
        expect(bubble(page, second).get_by_test_id("attempt-counter")).to_have_text("2 / 2")
    bubble(page, ids[8]).get_by_test_id("attempt-prev").click()
    expect(bubble(page, ids[7])).to_be_visible()
    expect(bubble(page, ids[8])).to_be_hidden()
    expect(bubble(page, ids[7]).get_by_test_id("attempt-counter")).to_have_text("1 / 2")
    older = bubble(page, ids[7])
    expect(older.locator("strong")).to_have_text("message 07")
    expect(older.get_by_test_id("copy-code-button")).to_have_count(1)
    assert snapshot(page, ids[7])["text"] == history[7].content

    scroll_to_top_measuring(page, ids[4])
    expect(bubble(page, ids[0])).to_be_attached()
    expect(page.get_by_test_id("older-messages")).to_be_hidden()
    assert shown(page) == ids
    assert len(older_loads) == 3
    scroll_to_top_measuring(page, ids[0])
    page.wait_for_timeout(300)
    assert len(older_loads) == 3, "asked for older messages after the first one"
    assert shown(page) == ids

    sent = send_with_enter(page, "And now?")
    poll_until_final(page, sent["assistant_message"]["id"])
    wait_for_final(sent["assistant_message"]["id"])
    assert shown(page) == [*ids, sent["user_message"]["id"], sent["assistant_message"]["id"]]
    expect(
        bubble(page, sent["assistant_message"]["id"]).get_by_test_id("regenerate-button")
    ).to_be_visible()


def test_a_message_sent_elsewhere_appears_without_the_older_history(
    open_context, daphne_short_pages, user, password
):
    """A turn sent from another client reaches the open page (the stream announces the
    answer and the page fetches the question it missed) without the page fetching or
    showing the older history it has not scrolled to."""
    conversation, history = make_history(user)
    ids = [str(m.pk) for m in history]
    page = log_in(open_context(), daphne_short_pages, user, password)
    page.goto(f"{daphne_short_pages.url}/c/{conversation.pk}/")
    wait_until_idle(page)

    sent = ChatApi(daphne_short_pages.url, user.username, password).send(
        str(conversation.pk), "Hello from elsewhere"
    )
    answer_id = sent["assistant_message"]["id"]
    wait_for_final(answer_id)
    expect(bubble(page, answer_id)).to_have_attribute("data-status", "complete")
    expect(bubble(page, sent["user_message"]["id"])).to_be_attached()

    assert shown(page) == [*ids[12:], sent["user_message"]["id"], answer_id]


def test_a_failed_load_of_older_messages_says_so_and_scrolling_up_again_retries(
    open_context, daphne_short_pages, user, password
):
    """When older messages cannot be fetched the page says so above the history and keeps
    what it shows; scrolling up again (after a moment) loads them."""
    conversation, history = make_history(user)
    ids = [str(m.pk) for m in history]
    page = log_in(open_context(), daphne_short_pages, user, password)
    refused: list[str] = []

    def refuse_once(route):
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/messages/?*cursor=*", refuse_once)
    page.goto(f"{daphne_short_pages.url}/c/{conversation.pk}/")
    wait_until_idle(page)

    scroll_to_top_measuring(page, ids[12])
    notice = page.get_by_test_id("older-messages")
    expect(notice).to_have_text("Couldn't load earlier messages. Scroll up to try again.")
    assert shown(page) == ids[12:]

    page.wait_for_timeout(2100)  # the page waits 2 s before it asks again
    page.get_by_test_id("thread").evaluate("(el) => { el.scrollTop = 1; }")
    expect(bubble(page, ids[4])).to_be_attached()
    expect(notice).to_be_hidden()
    assert shown(page) == ids[4:]
    assert len(refused) == 1
