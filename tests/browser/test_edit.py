"""Editing a sent message in a real browser: the edit box, the new branch streaming in, the
"n / m" switcher at the edited turn, and sends continuing the branch the reader sees.

Answers come from the fake Anthropic server through the real SDK.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import (
    bubble,
    log_in,
    new_conversation,
    poll_until_final,
    send_with_enter,
    snapshot,
    wait_until_idle,
)
from tests.e2e.client import ChatApi, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def visible_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        '[data-testid="message"]:not([hidden])', "els => els.map(e => e.dataset.messageId)"
    )


def open_editor(page, message_id: str):
    target = bubble(page, message_id)
    target.hover()
    target.get_by_test_id("edit-message-button").click()
    editor = target.get_by_test_id("edit-input")
    expect(editor).to_be_visible()
    expect(editor).to_be_focused()
    return editor


def test_an_edit_streams_a_new_branch_and_the_switcher_flips_between_branches(
    open_context, daphne_anthropic, user, password
):
    """Edit the second question: its answer streams in on a new branch (the old question and
    answer hidden), the edited turn says "2 / 2", and switching to "1 / 2" shows the old
    question with its answer below. A send then continues branch 1 (the `parent` sent and
    stored is branch 1's answer), and a reload shows that branch, the newest."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    one = send_with_enter(page, f"One {fake(text='First answer.', tps=0)}")
    poll_until_final(page, one["assistant_message"]["id"])
    two = send_with_enter(page, f"Two {fake(text='Second answer.', tps=0)}")
    q2, a2 = two["user_message"]["id"], two["assistant_message"]["id"]
    poll_until_final(page, a2)

    editor = open_editor(page, q2)
    expect(editor).to_have_value(f"Two {fake(text='Second answer.', tps=0)}")
    editor.press("End")
    editor.press("Shift+Enter")  # a new line, not a send
    expect(editor).to_have_value(f"Two {fake(text='Second answer.', tps=0)}\n")
    assert Message.objects.filter(conversation__owner=user).count() == 4
    editor.fill(f"Two, edited {fake(text='Edited answer, streamed.', tps=20)}")
    with page.expect_response(lambda r: r.url.endswith("/edit/")) as edited:
        editor.press("Enter")
    assert edited.value.status == 201, edited.value.text()
    new_q2 = edited.value.json()["user_message"]["id"]
    new_a2 = edited.value.json()["assistant_message"]["id"]
    samples = poll_until_final(page, new_a2)
    assert any(s["status"] == "streaming" for s in samples)
    assert snapshot(page, new_a2)["text"] == "Edited answer, streamed."
    assert wait_for_final(new_a2).content == "Edited answer, streamed."

    first_turn = [one["user_message"]["id"], one["assistant_message"]["id"]]
    assert visible_ids(page) == [*first_turn, new_q2, new_a2]
    expect(bubble(page, new_q2).get_by_test_id("attempt-counter")).to_have_text("2 / 2")
    expect(bubble(page, new_q2).get_by_test_id("edit-input")).to_have_count(0)

    bubble(page, new_q2).get_by_test_id("attempt-prev").click()
    expect(bubble(page, q2)).to_be_visible()
    assert visible_ids(page) == [*first_turn, q2, a2]
    expect(bubble(page, q2).get_by_test_id("attempt-counter")).to_have_text("1 / 2")
    expect(bubble(page, q2).get_by_test_id("attempt-next")).to_be_focused()

    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/messages/")
    ) as request:
        three = send_with_enter(page, f"Three {fake(text='Third answer.', tps=0)}")
    assert json.loads(request.value.post_data)["parent"] == a2
    assert str(Message.objects.get(pk=three["user_message"]["id"]).parent_id) == a2
    a3 = three["assistant_message"]["id"]
    poll_until_final(page, a3)
    assert visible_ids(page) == [*first_turn, q2, a2, three["user_message"]["id"], a3]

    page.reload()
    wait_until_idle(page)
    assert visible_ids(page) == [*first_turn, q2, a2, three["user_message"]["id"], a3]
    expect(bubble(page, q2).get_by_test_id("attempt-counter")).to_have_text("1 / 2")
    bubble(page, q2).get_by_test_id("attempt-next").click()
    assert visible_ids(page) == [*first_turn, new_q2, new_a2]


def two_turns(user) -> tuple[Conversation, list[Message]]:
    """A conversation of two finished exchanges, stored as a send stores them."""
    conversation = Conversation.objects.create(owner=user, title="Edits", model="claude-test")
    start = timezone.now() - timedelta(minutes=5)
    rows: list[Message] = []
    exchange = [
        ("user", "First question"),
        ("assistant", "First answer."),
        ("user", "Second question"),
        ("assistant", "Second answer."),
    ]
    for n, (role, content) in enumerate(exchange):
        rows.append(
            Message.objects.create(
                conversation=conversation,
                role=role,
                content=content,
                reply_to=rows[-1] if role == "assistant" else None,
                parent=rows[-1] if role == "user" and rows else None,
                created_at=start + timedelta(seconds=n),
            )
        )
    return conversation, rows


@pytest.mark.parametrize("device", ["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_edit_control_and_the_switcher_are_visible_and_usable(
    open_context, daphne_anthropic, user, password, scheme, device
):
    """In light and dark, on a desktop (shown on hover or focus) and a phone (always shown):
    Edit opens the box, Escape cancels it, Send (the button) makes the new branch, and the
    edited turn's switcher flips between the versions."""
    conversation, (_, _, question, answer) = two_turns(user)
    options = {"color_scheme": scheme, **(PHONE if device == "phone" else {})}
    page = log_in(open_context(**options), daphne_anthropic, user, password)
    page.goto(f"{daphne_anthropic.url}/c/{conversation.pk}/")
    wait_until_idle(page)
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")

    target = bubble(page, str(question.pk))
    edit = target.get_by_test_id("edit-message-button")
    expect(edit).to_have_attribute("aria-label", "Edit message")
    if device == "phone":
        expect(edit).to_be_visible()
        expect(edit).to_have_css("opacity", "1")
    else:
        target.hover()
        expect(edit).to_have_css("opacity", "1")
    edit.click()
    editor = target.get_by_test_id("edit-input")
    expect(editor).to_be_visible()
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(target.get_by_test_id("message-body")).to_have_text("Second question")

    if device == "desktop":
        target.hover()
    edit.click()
    editor = target.get_by_test_id("edit-input")
    editor.fill(f"Second question, edited {fake(text='New answer.', tps=0)}")
    send = target.get_by_test_id("edit-send")
    expect(send).to_be_visible()
    expect(send).to_be_in_viewport()
    with page.expect_response(lambda r: r.url.endswith("/edit/")) as edited:
        send.click()
    assert edited.value.status == 201, edited.value.text()
    new_q = edited.value.json()["user_message"]["id"]
    poll_until_final(page, edited.value.json()["assistant_message"]["id"])

    counter = bubble(page, new_q).get_by_test_id("attempt-counter")
    expect(counter).to_be_visible()
    expect(counter).to_have_text("2 / 2")
    colour, background = page.evaluate(
        """(el) => [getComputedStyle(el).color,
                    getComputedStyle(document.body).backgroundColor]""",
        counter.element_handle(),
    )
    assert colour != background
    previous = bubble(page, new_q).get_by_test_id("attempt-prev")
    expect(previous).to_be_visible()
    expect(previous).to_have_attribute("aria-label", "Previous version")
    previous.click()
    expect(bubble(page, str(question.pk))).to_be_visible()
    expect(bubble(page, str(answer.pk))).to_be_visible()
    expect(bubble(page, new_q)).to_be_hidden()
    expect(bubble(page, str(question.pk)).get_by_test_id("attempt-counter")).to_have_text("1 / 2")


ELSEWHERE = " ".join(f"word{n:02d}" for n in range(40))  # 2 s at 20 deltas a second


def test_an_edit_made_elsewhere_streams_on_its_branch_without_moving_the_page(
    open_context, daphne_anthropic, user, password
):
    """Another client edits the second question while the page is open: its answer streams
    on the other branch, and the page keeps showing the branch it showed (the new answer
    hidden once placed, the edited turn now "1 / 2"); the reader can switch to the new
    branch and sees its answer whole, and can send again once it has ended."""
    conversation, (q1, a1, question, answer) = two_turns(user)
    page = log_in(open_context(), daphne_anthropic, user, password)
    page.goto(f"{daphne_anthropic.url}/c/{conversation.pk}/")
    wait_until_idle(page)
    before = visible_ids(page)
    assert before == [str(m.pk) for m in (q1, a1, question, answer)]

    elsewhere = ChatApi(daphne_anthropic.url, user.username, password)
    response = elsewhere.http.post(
        f"/api/v1/messages/{question.pk}/edit/",
        json={"content": f"Edited elsewhere {fake(text=ELSEWHERE, tps=20)}"},
    )
    assert response.status_code == 201, response.text
    new_q = response.json()["user_message"]["id"]
    new_a = response.json()["assistant_message"]["id"]
    expect(bubble(page, new_a)).to_be_attached()
    # While it streams, nothing can be edited or sent (the server would refuse: one run).
    edit = bubble(page, str(q1.pk)).get_by_test_id("edit-message-button")
    expect(edit).to_be_disabled()
    expect(page.get_by_test_id("composer-input")).to_be_disabled()
    assert wait_for_final(new_a).content == ELSEWHERE
    expect(edit).to_be_enabled()
    expect(bubble(page, new_a)).to_have_attribute("data-status", "complete")
    expect(bubble(page, new_a)).to_be_hidden()
    expect(bubble(page, new_q)).to_be_hidden()
    assert visible_ids(page) == before
    expect(bubble(page, str(question.pk)).get_by_test_id("attempt-counter")).to_have_text("1 / 2")
    expect(page.get_by_test_id("composer-input")).to_be_enabled()

    bubble(page, str(question.pk)).get_by_test_id("attempt-next").click()
    assert visible_ids(page) == [str(q1.pk), str(a1.pk), new_q, new_a]
    assert snapshot(page, new_a)["text"] == ELSEWHERE
