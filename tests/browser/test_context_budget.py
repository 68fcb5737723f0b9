"""The page tells the reader when Claude was not sent the whole conversation, and when the
day's token budget is spent (see `daphne_bounded` in tests/conftest.py for the settings)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    bubble,
    log_in,
    new_conversation,
    poll_until_final,
    send_with_enter,
    snapshot,
    wait_until_idle,
    words,
)
from tests.conftest import BOUNDED_ENV
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

BUDGET = int(BOUNDED_ENV["CHAT_DAILY_TOKEN_BUDGET"])
LEFT_OUT_ONE = (
    "Claude was not sent the first exchange of this conversation: the whole conversation is "
    "longer than its context window."
)


def question(n: int) -> str:
    """About 1,000 estimated tokens: two fit the window beside the newest question, not three."""
    return f"Question {n} " + "x" * 2400


def test_the_page_says_when_earlier_exchanges_were_not_sent_to_claude(
    open_context, daphne_bounded, user, password
):
    """The third long question no longer fits with the first exchange: its answer says so at
    once — in the tab that sent it and, from the stream's `message_start`, in another tab
    while it streams — and again after a reload. Answers that saw everything say nothing."""
    context = open_context()
    page = log_in(context, daphne_bounded, user, password)
    new_conversation(page)
    earlier = []
    for n in range(2):
        sent = send_with_enter(page, f"{question(n)} {fake(text=f'Answer {n}.', tps=0)}")
        earlier.append(sent["assistant_message"]["id"])
        poll_until_final(page, earlier[-1])
    watcher = context.new_page()
    watcher.goto(page.url)
    wait_until_idle(watcher)

    sent = send_with_enter(page, f"{question(2)} {fake(text=words(60, 'a'), tps=10)}")
    third = sent["assistant_message"]["id"]
    assert sent["assistant_message"]["context_omitted_turns"] == 1
    for tab in (page, watcher):
        expect(bubble(tab, third).get_by_test_id("context-note")).to_have_text(LEFT_OUT_ONE)
    assert snapshot(watcher, third)["status"] == "streaming"
    for answer in earlier:
        expect(bubble(page, answer).get_by_test_id("context-note")).to_be_hidden()

    poll_until_final(page, third)
    page.reload()
    wait_until_idle(page)
    expect(bubble(page, third).get_by_test_id("context-note")).to_have_text(LEFT_OUT_ONE)
    expect(bubble(page, third).get_by_test_id("context-note")).to_be_visible()
    for answer in earlier:
        expect(bubble(page, answer).get_by_test_id("context-note")).to_be_hidden()


def test_a_spent_budget_pauses_sending_with_a_clear_message_until_it_renews(
    open_context, daphne_bounded, user, password
):
    """Once the day's tokens are spent, a send shows why (the server's message and until when
    sending is paused), keeps the draft, and turns Send and Regenerate off; a reload turns
    them back on, and so does the end of the wait the server named (`Retry-After`)."""
    page = log_in(open_context(), daphne_bounded, user, password)
    new_conversation(page)
    used = sends = 0
    while used < BUDGET:
        sends += 1
        sent = send_with_enter(page, f"Go {fake(tokens=120, tps=0)}")
        last = sent["assistant_message"]["id"]
        poll_until_final(page, last)
        answer = wait_for_final(last)
        used += answer.input_tokens + answer.output_tokens
    wait_until_idle(page)

    composer = page.get_by_test_id("composer-input")
    send = page.get_by_test_id("send-button")
    notice = page.get_by_test_id("composer-error")
    regenerate = bubble(page, last).get_by_test_id("regenerate-button")

    def refused_send(draft: str) -> None:
        composer.fill(draft)
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith("/messages/")
        ) as refused:
            composer.press("Enter")
        assert refused.value.status == 429
        assert refused.value.json()["code"] == "token_budget_exhausted"

    refused_send("One more?")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(f"You have used today's allowance of {BUDGET:,} tokens.")
    expect(notice).to_contain_text("midnight UTC")
    expect(notice).to_contain_text("Sending is paused until")
    expect(send).to_be_disabled()
    expect(regenerate).to_be_disabled()
    expect(composer).to_have_value("One more?")
    expect(composer).to_be_enabled()
    expect(page.get_by_test_id("message")).to_have_count(2 * sends)  # nothing added

    page.reload()
    wait_until_idle(page)
    expect(send).to_be_enabled()
    expect(regenerate).to_be_enabled()
    expect(notice).to_be_hidden()

    # The server's wait is hours long (until midnight UTC); this page is told 2 seconds, so
    # the test sees sending come back when the wait is over.
    def short_wait(route):
        if route.request.method != "POST":
            route.continue_()
            return
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "retry-after": "2"})

    page.route("**/messages/", short_wait)
    refused_send("And now?")
    expect(send).to_be_disabled()
    expect(notice).to_contain_text("Sending is paused until")
    expect(send).to_be_enabled(timeout=10_000)
    expect(regenerate).to_be_enabled()
    expect(notice).to_be_hidden()
    expect(composer).to_have_value("And now?")
