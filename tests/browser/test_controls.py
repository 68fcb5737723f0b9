"""The chat page's controls in a real browser: stop, regenerate, retry, copy, the keyboard,
conversation settings, rename and delete, scrolling, the phone sidebar and going offline.

Answers come from the fake Anthropic server through the real SDK, so what the upstream saw
(a request, a client that went away) can be checked at the fake's `/_fake/stats`.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from chat.conf import chat_settings
from chat.models import Conversation, Message
from tests.browser.helpers import (
    assert_shows_stored_answer,
    bubble,
    conversation_id_of,
    fake_stats,
    log_in,
    new_conversation,
    poll_until_final,
    send_with_enter,
    snapshot,
    wait_for_stats,
    wait_for_text,
    wait_until_idle,
    words,
)
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def test_stop_keeps_the_partial_answer_and_aborts_the_upstream(
    open_context, daphne_anthropic, fake_anthropic, user, password
):
    """Stop mid-answer: the page calls the cancel endpoint, the partial text stays (marked
    stopped, equal to the stored text), the run really aborts its upstream request (the fake
    server sees the client leave and streams nothing more), and the composer is usable."""
    answer = words(120, "s")  # 150 deltas at 10/s: 15 s, far longer than the test
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    before = fake_stats(fake_anthropic)

    sent = send_with_enter(page, f"Go on and on {fake(text=answer, tps=10)}")
    assistant_id = sent["assistant_message"]["id"]
    wait_for_text(page, assistant_id, min_chars=20)
    assert fake_stats(fake_anthropic)["active_streams"] >= 1
    with page.expect_response(lambda r: r.url.endswith("/cancel/")) as cancelled:
        page.get_by_test_id("stop-button").click()

    assert cancelled.value.status == 200
    answer_bubble = bubble(page, assistant_id)
    expect(answer_bubble).to_have_attribute("data-status", "cancelled")
    expect(answer_bubble.get_by_test_id("message-status")).to_have_text("stopped")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.CANCELLED
    shown = snapshot(page, assistant_id)["text"]
    assert shown == message.content
    assert 20 <= len(shown) < len(answer) and answer.startswith(shown)
    stats = wait_for_stats(
        fake_anthropic,
        lambda s: (
            s["active_streams"] == 0 and s["client_disconnects"] > before["client_disconnects"]
        ),
    )
    assert stats["streams_completed"] == before["streams_completed"]
    page.wait_for_timeout(600)  # nothing more arrives, on the page or in the database
    assert snapshot(page, assistant_id)["text"] == shown
    assert Message.objects.get(pk=assistant_id).content == shown
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(page.get_by_test_id("composer-input")).to_be_enabled()
    expect(answer_bubble.get_by_test_id("regenerate-button")).to_be_visible()


def test_regenerate_makes_a_new_answer_and_keeps_the_old_one_switchable(
    open_context, daphne_anthropic, user, password
):
    """Regenerate asks for a new answer to the same question: the page shows only the new
    attempt (with "2 / 2"), the earlier one stays reachable with the switcher, and after a
    reload the server renders the same."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    sent = send_with_enter(page, f"Roll a die {fake(stamp=True, tokens=6, tps=30)}")
    first_id = sent["assistant_message"]["id"]
    user_id = sent["user_message"]["id"]
    poll_until_final(page, first_id)
    first = assert_shows_stored_answer(page, first_id)

    with page.expect_response(lambda r: r.url.endswith("/regenerate/")) as regenerated:
        bubble(page, first_id).get_by_test_id("regenerate-button").click()
    assert regenerated.value.status == 201
    second_id = regenerated.value.json()["id"]
    assert second_id != first_id
    assert regenerated.value.json()["reply_to"] == user_id
    poll_until_final(page, second_id)
    second = assert_shows_stored_answer(page, second_id)

    assert second.reply_to_id == first.reply_to_id == uuid.UUID(user_id)
    assert second.content != first.content  # stamped with the time each was generated
    expect(bubble(page, first_id)).to_be_hidden()
    expect(bubble(page, second_id)).to_be_visible()
    expect(bubble(page, second_id).get_by_test_id("attempt-counter")).to_have_text("2 / 2")
    expect(page.locator('[data-testid="message"]:visible')).to_have_count(2)

    bubble(page, second_id).get_by_test_id("attempt-prev").click()
    expect(bubble(page, first_id)).to_be_visible()
    expect(bubble(page, second_id)).to_be_hidden()
    expect(bubble(page, first_id).get_by_test_id("attempt-counter")).to_have_text("1 / 2")
    expect(bubble(page, first_id).get_by_test_id("attempt-next")).to_be_focused()
    bubble(page, first_id).get_by_test_id("attempt-next").click()
    expect(bubble(page, second_id)).to_be_visible()

    page.reload()
    wait_until_idle(page)
    expect(bubble(page, first_id)).to_be_hidden()
    expect(bubble(page, second_id)).to_be_visible()
    expect(bubble(page, second_id).get_by_test_id("attempt-counter")).to_have_text("2 / 2")
    assert snapshot(page, second_id)["text"] == second.content


def test_retry_after_a_failed_answer(open_context, daphne_anthropic, user, password):
    """An answer that failed (the upstream was overloaded through every SDK retry) shows its
    error and a Retry button; Retry asks again and the new answer replaces it on the page."""
    text = "Second time lucky."
    directive = fake(status=529, fail_times=3, retry_after=0, id=uuid.uuid4().hex, text=text)
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)

    sent = send_with_enter(page, f"Try me {directive}")
    failed_id = sent["assistant_message"]["id"]
    expect(bubble(page, failed_id)).to_have_attribute("data-status", "failed", timeout=20_000)
    expect(bubble(page, failed_id).get_by_test_id("message-status")).to_contain_text("failed")
    retry = bubble(page, failed_id).get_by_test_id("retry-button")
    expect(retry).to_be_visible()
    expect(bubble(page, failed_id).get_by_test_id("regenerate-button")).to_be_hidden()

    with page.expect_response(lambda r: r.url.endswith("/regenerate/")) as regenerated:
        retry.click()
    new_id = regenerated.value.json()["id"]
    poll_until_final(page, new_id)
    message = assert_shows_stored_answer(page, new_id)
    assert message.content == text
    expect(bubble(page, failed_id)).to_be_hidden()
    expect(bubble(page, new_id).get_by_test_id("attempt-counter")).to_have_text("2 / 2")


def test_copy_puts_the_message_and_a_code_block_on_the_clipboard(
    open_context, daphne_anthropic, user, password
):
    """Copy on a message copies its markdown source; Copy on a code block copies the code."""
    answer = "Here you go:\n\n```python\nprint('hello, world')\n```\n\nThat prints a greeting."
    context = open_context(permissions=["clipboard-read", "clipboard-write"])
    page = log_in(context, daphne_anthropic, user, password)
    new_conversation(page)
    sent = send_with_enter(page, f"Code please {fake(text=answer, tps=40)}")
    assistant_id = sent["assistant_message"]["id"]
    poll_until_final(page, assistant_id)
    assert_shows_stored_answer(page, assistant_id)
    answer_bubble = bubble(page, assistant_id)
    expect(answer_bubble.locator(".code-block__lang")).to_have_text("python")

    answer_bubble.get_by_test_id("copy-message-button").click()
    expect(answer_bubble.get_by_test_id("copy-message-button")).to_have_attribute(
        "data-copied", "true"
    )
    assert page.evaluate("navigator.clipboard.readText()") == answer

    code_copy = answer_bubble.get_by_test_id("copy-code-button")
    code_copy.click()
    expect(code_copy).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hello, world')\n"

    user_bubble = bubble(page, sent["user_message"]["id"])
    user_bubble.hover()
    user_bubble.get_by_test_id("copy-message-button").click()
    expect(user_bubble.get_by_test_id("copy-message-button")).to_have_attribute(
        "data-copied", "true"
    )
    assert page.evaluate("navigator.clipboard.readText()").startswith("Code please [[fake:")


def test_keyboard_only_send_and_stop(open_context, daphne_anthropic, user, password):
    """Without a mouse: sign in, start a conversation by typing on the home page, stop the
    answer with Escape, send again with Enter and stop that one with Enter on the Stop
    button (where focus lands while an answer streams); focus returns to the composer, and
    focused controls show a visible focus ring."""
    page = open_context().new_page()
    page.goto(f"{daphne_anthropic.url}/accounts/login/")
    expect(page.locator("input[name=username]")).to_be_focused()  # autofocus
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{daphne_anthropic.url}/")

    composer = page.get_by_test_id("composer-input")
    expect(composer).to_be_focused()
    page.keyboard.type(f"First {fake(text=words(100, 'k'), tps=10)}")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    conversation_id = conversation_id_of(page)
    first = Message.objects.get(conversation_id=conversation_id, role="assistant")
    wait_for_text(page, str(first.pk), min_chars=10)
    page.keyboard.press("Escape")
    expect(bubble(page, str(first.pk))).to_have_attribute("data-status", "cancelled")
    expect(composer).to_be_focused()

    page.keyboard.type(f"Second {fake(text=words(100, 'j'), tps=10)}")
    page.keyboard.press("Enter")
    stop = page.get_by_test_id("stop-button")
    expect(stop).to_be_focused()
    second = page.locator('[data-role="assistant"]').last
    expect(second).to_have_attribute("data-status", "streaming")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "the focused Stop button shows no focus ring"
    page.keyboard.press("Enter")
    expect(second).to_have_attribute("data-status", "cancelled")
    expect(composer).to_be_focused()
    stored = Message.objects.filter(conversation_id=conversation_id, role="assistant")
    assert [m.status for m in stored.order_by("created_at")] == ["cancelled", "cancelled"]


def test_settings_change_the_model_and_system_prompt_of_the_next_answer(
    open_context, daphne_anthropic, fake_anthropic, user, password
):
    """The settings dialog saves model and system prompt; the next request to the upstream
    uses both, and the answer shows the model it came from."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    conversation_id = new_conversation(page)
    page.get_by_test_id("conversation-settings-button").click()
    dialog = page.get_by_test_id("conversation-settings")
    expect(dialog).to_be_visible()
    dialog.get_by_test_id("settings-model").select_option("claude-haiku-4-5")
    dialog.get_by_test_id("settings-system-prompt").fill("Answer like a pirate.")
    with page.expect_response(lambda r: r.request.method == "PATCH") as saved:
        dialog.get_by_test_id("settings-save").click()
    assert saved.value.status == 200
    expect(dialog).to_be_hidden()
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.model == "claude-haiku-4-5"
    assert conversation.system_prompt == "Answer like a pirate."

    sent = send_with_enter(page, f"Ahoy {fake(text='Arr.', tps=0)}")
    assistant_id = sent["assistant_message"]["id"]
    poll_until_final(page, assistant_id)
    upstream = fake_stats(fake_anthropic)["last_request"]
    assert upstream["model"] == "claude-haiku-4-5"
    assert "Answer like a pirate." in str(upstream["system"])
    expect(bubble(page, assistant_id).get_by_test_id("message-meta")).to_contain_text(
        "Claude Haiku 4.5"
    )

    # Escape closes the dialog without saving.
    page.get_by_test_id("conversation-settings-button").click()
    dialog.get_by_test_id("settings-model").select_option("claude-opus-4-5")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert Conversation.objects.get(pk=conversation_id).model == "claude-haiku-4-5"


def test_rename_and_delete_a_conversation(open_context, daphne_anthropic, user, password):
    """Rename edits the title in place (Enter saves, Escape cancels); Delete asks first, then
    removes the conversation and goes home."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    keep_id = new_conversation(page)
    # Listed in the sidebar once it has a message (empty ones are not, unless open).
    Message.objects.create(conversation_id=keep_id, role="user", content="Keep this one")
    doomed_id = new_conversation(page)

    page.get_by_test_id("rename-conversation").click()
    title_input = page.get_by_test_id("rename-input")
    expect(title_input).to_be_focused()
    title_input.fill("Never mind")
    title_input.press("Escape")
    expect(title_input).to_be_hidden()
    assert Conversation.objects.get(pk=doomed_id).title == ""

    page.get_by_test_id("rename-conversation").click()
    title_input.fill("Plans for Tuesday")
    with page.expect_response(lambda r: r.request.method == "PATCH") as renamed:
        title_input.press("Enter")
    assert renamed.value.status == 200
    expect(page.get_by_test_id("conversation-title")).to_have_text("Plans for Tuesday")
    link = page.locator(f'[data-testid="conversation-link"][data-conversation-id="{doomed_id}"]')
    expect(link).to_have_text("Plans for Tuesday")
    assert Conversation.objects.get(pk=doomed_id).title == "Plans for Tuesday"
    expect(page).to_have_title("Plans for Tuesday · chatsite")

    page.get_by_test_id("delete-conversation").click()
    confirm = page.get_by_test_id("delete-dialog")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    assert Conversation.objects.filter(pk=doomed_id).exists()

    page.get_by_test_id("delete-conversation").click()
    with page.expect_navigation(url=f"{daphne_anthropic.url}/"):
        confirm.get_by_test_id("confirm-delete").click()
    assert not Conversation.objects.filter(pk=doomed_id).exists()
    assert Conversation.objects.filter(pk=keep_id).exists()
    expect(page.locator(f'[data-conversation-id="{doomed_id}"]')).to_have_count(0)
    expect(page.locator(f'[data-conversation-id="{keep_id}"]')).to_have_count(1)


def test_autoscroll_follows_unless_the_reader_scrolled_up(
    open_context, daphne_anthropic, user, password
):
    """While an answer streams the thread follows it; after scrolling up it stays put and a
    "jump to latest" button appears, which scrolls back down and resumes following."""
    answer = "\n\n".join(f"Paragraph {i}: " + words(12, f"p{i}x") for i in range(32))
    context = open_context(viewport={"width": 1000, "height": 500})
    page = log_in(context, daphne_anthropic, user, password)
    new_conversation(page)
    sent = send_with_enter(page, f"Long one {fake(text=answer, tps=40, chunk=8)}")
    assistant_id = sent["assistant_message"]["id"]
    thread = page.get_by_test_id("thread")
    jump = page.get_by_test_id("jump-to-latest")
    distance = "(el) => el.scrollHeight - el.scrollTop - el.clientHeight"

    wait_for_text(page, assistant_id, min_chars=900)
    assert thread.evaluate(distance) < 80, "the thread did not follow the answer"
    expect(jump).to_be_hidden()

    thread.hover()
    page.mouse.wheel(0, -600)
    expect(jump).to_be_visible()
    held = thread.evaluate("(el) => el.scrollTop")
    wait_for_text(page, assistant_id, min_chars=1700)
    assert thread.evaluate("(el) => el.scrollTop") == held, "scrolled although the reader left"
    assert thread.evaluate(distance) > 80

    jump.click()
    expect(jump).to_be_hidden()
    wait_for_text(page, assistant_id, min_chars=2500)
    page.wait_for_timeout(100)
    assert thread.evaluate(distance) < 80, "did not resume following after the jump"
    poll_until_final(page, assistant_id, timeout=30)
    assert_shows_stored_answer(page, assistant_id)


def test_phone_sidebar_is_a_drawer(open_context, daphne_anthropic, user, password):
    """On a phone the conversation list is hidden behind a menu button; it opens as a drawer
    over the page and closes with Escape (focus back on the button) or a tap outside."""
    older = Conversation.objects.create(owner=user, title="An older chat", model="m")
    Message.objects.create(conversation=older, role="user", content="Hello")
    page = log_in(open_context(**PHONE), daphne_anthropic, user, password)
    sidebar = page.get_by_test_id("sidebar")
    toggle = page.get_by_test_id("sidebar-toggle")
    link = page.get_by_test_id("conversation-link").first

    expect(link).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(link).to_be_visible()
    expect(sidebar).to_be_in_viewport()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(link).to_be_hidden()
    expect(toggle).to_be_focused()

    toggle.click()
    expect(link).to_be_visible()
    page.get_by_test_id("sidebar-backdrop").click(position={"x": 370, "y": 400})
    expect(link).to_be_hidden()

    # A new conversation is one tap away in the header: the home page's empty composer.
    toggle.click()
    link.click()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    wait_until_idle(page)
    page.get_by_test_id("new-conversation-compact").click()
    page.wait_for_url(f"{daphne_anthropic.url}/")
    expect(page.get_by_test_id("composer-input")).to_have_value("")
    assert Conversation.objects.filter(owner=user).count() == 1


def test_desktop_sidebar_collapses_and_stays_collapsed(
    open_context, daphne_anthropic, user, password
):
    """On a desktop the sidebar can be hidden and brought back; the choice survives a reload."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    sidebar = page.get_by_test_id("sidebar")
    page.get_by_test_id("sidebar-close").click()
    expect(sidebar).to_be_hidden()
    toggle = page.get_by_test_id("sidebar-toggle")
    expect(toggle).to_be_focused()
    page.reload()
    expect(sidebar).to_be_hidden()
    page.get_by_test_id("sidebar-toggle").click()
    expect(sidebar).to_be_visible()
    page.reload()
    expect(sidebar).to_be_visible()


def test_going_offline_shows_offline_and_coming_back_recovers(
    open_context, daphne_anthropic, user, password
):
    """When the browser loses the network the status says so; when it is back, the page is
    ready again and answers stream as before."""
    context = open_context()
    page = log_in(context, daphne_anthropic, user, password)
    new_conversation(page)
    status = page.get_by_test_id("stream-status")

    context.set_offline(True)
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_contain_text("Offline")
    context.set_offline(False)
    wait_until_idle(page)

    sent = send_with_enter(page, f"Still there? {fake(text='Yes.', tps=0)}")
    poll_until_final(page, sent["assistant_message"]["id"])
    assert_shows_stored_answer(page, sent["assistant_message"]["id"])


def test_a_refused_send_keeps_the_draft_and_says_why(
    open_context, daphne_anthropic, user, password
):
    """A message the server refuses (too long: 413) stays in the composer, with the reason
    shown; nothing is added to the thread."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    draft = "x" * (chat_settings.MAX_MESSAGE_CHARS + 1)
    composer = page.get_by_test_id("composer-input")
    composer.fill(draft)
    with page.expect_response(lambda r: r.url.endswith("/messages/")) as refused:
        composer.press("Enter")

    assert refused.value.status == 413
    expect(page.get_by_test_id("composer-error")).to_contain_text("limited to")
    expect(composer).to_have_value(draft)
    expect(composer).to_be_enabled()
    expect(page.get_by_test_id("message")).to_have_count(0)
