"""The model picker, each answer's model and the conversation's token totals, on the page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import (
    bubble,
    fake_stats,
    log_in,
    new_conversation,
    poll_until_final,
    send_with_enter,
    wait_for_text,
    wait_until_idle,
    words,
)
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
CLAUDE_LABELS = ["Claude Sonnet 4.5", "Claude Haiku 4.5", "Claude Opus 4.5"]


def totals(conversation_id: str) -> tuple[int, int]:
    answers = Message.objects.filter(conversation_id=conversation_id, role="assistant")
    return (
        sum(m.input_tokens or 0 for m in answers),
        sum(m.output_tokens or 0 for m in answers),
    )


def test_the_settings_select_lists_the_models_and_saving_changes_the_model(
    open_context, daphne_anthropic, fake_anthropic, user, password
):
    """The settings dialog offers the site's models by label; choosing one and saving sets
    the conversation's model, the next answer is asked of it and shows its label, and a
    reload shows it selected."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    conversation_id = new_conversation(page)
    page.get_by_test_id("conversation-settings-button").click()
    select = page.get_by_test_id("settings-model")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_text(CLAUDE_LABELS)
    expect(select).to_have_value("claude-sonnet-4-5")
    select.select_option(label="Claude Haiku 4.5")
    with page.expect_response(lambda r: r.request.method == "PATCH") as saved:
        page.get_by_test_id("settings-save").click()
    assert saved.value.status == 200
    expect(page.get_by_test_id("conversation-settings")).to_be_hidden()
    assert Conversation.objects.get(pk=conversation_id).model == "claude-haiku-4-5"

    sent = send_with_enter(page, f"Hi {fake(text='Hello.', tps=0)}")
    answer_id = sent["assistant_message"]["id"]
    poll_until_final(page, answer_id)
    assert fake_stats(fake_anthropic)["last_request"]["model"] == "claude-haiku-4-5"
    expect(bubble(page, answer_id).get_by_test_id("message-model")).to_have_text("Claude Haiku 4.5")

    page.reload()
    wait_until_idle(page)
    expect(bubble(page, answer_id).get_by_test_id("message-model")).to_have_text("Claude Haiku 4.5")
    page.get_by_test_id("conversation-settings-button").click()
    expect(page.get_by_test_id("settings-model")).to_have_value("claude-haiku-4-5")


def test_the_home_page_starts_a_conversation_on_the_chosen_model(
    open_context, daphne_anthropic, user, password
):
    """The home composer's model select picks the new conversation's model."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    choice = page.get_by_test_id("composer-model")
    expect(choice.locator("option")).to_have_text(CLAUDE_LABELS)
    choice.select_option("claude-opus-4-5")
    page.get_by_test_id("composer-input").fill(f"Hello {fake(text='Hi.', tps=0)}")
    page.get_by_test_id("composer-input").press("Enter")
    page.wait_for_url("**/c/*/")
    wait_until_idle(page)
    conversation = Conversation.objects.get(owner=user)
    assert conversation.model == "claude-opus-4-5"
    answer = Message.objects.get(conversation=conversation, role="assistant")
    expect(bubble(page, str(answer.pk)).get_by_test_id("message-model")).to_have_text(
        "Claude Opus 4.5"
    )


def test_a_demo_answer_says_demo_model(open_context, daphne_demo, user, password):
    """Without an API key the select offers the demo model alone, and its answers say
    "demo model" — live and after a reload — not a Claude model id."""
    page = log_in(open_context(), daphne_demo, user, password)
    new_conversation(page)
    sent = send_with_enter(page, "Hello")
    answer_id = sent["assistant_message"]["id"]
    poll_until_final(page, answer_id)
    model = bubble(page, answer_id).get_by_test_id("message-model")
    expect(model).to_have_text("demo model")
    page.reload()
    wait_until_idle(page)
    expect(model).to_have_text("demo model")
    page.get_by_test_id("conversation-settings-button").click()
    expect(page.get_by_test_id("settings-model").locator("option")).to_have_text(["demo model"])


def test_the_header_totals_update_when_an_answer_ends_stopped_ones_included(
    open_context, daphne_anthropic, user, password
):
    """The header's token total starts at 0 and follows each answer as it ends — a stopped
    one too, with its estimated usage — and its tooltip splits input and output."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    conversation_id = new_conversation(page)
    usage = page.get_by_test_id("conversation-usage")
    total = usage.locator("[data-usage-total]")
    expect(total).to_have_text("0")

    sent = send_with_enter(page, f"One {fake(text=words(20, 'a'), tps=0)}")
    poll_until_final(page, sent["assistant_message"]["id"])
    tokens_in, tokens_out = totals(conversation_id)
    assert tokens_in and tokens_out
    expect(total).to_have_text(f"{tokens_in + tokens_out:,}")
    expect(usage).to_have_attribute("title", f"{tokens_in:,} in · {tokens_out:,} out")

    sent = send_with_enter(page, f"Two {fake(text=words(200, 'b'), tps=20)}")
    answer_id = sent["assistant_message"]["id"]
    wait_for_text(page, answer_id, min_chars=20)
    page.get_by_test_id("stop-button").click()
    stopped = wait_for_final(answer_id)
    assert stopped.status == Message.Status.CANCELLED
    assert stopped.usage_estimated and stopped.output_tokens > 0
    tokens_in, tokens_out = totals(conversation_id)
    expect(total).to_have_text(f"{tokens_in + tokens_out:,}")
    expect(bubble(page, answer_id).get_by_test_id("message-usage")).to_contain_text(
        f"~{stopped.output_tokens} out"
    )


@pytest.mark.parametrize("device", ["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_model_select_label_and_totals_are_visible(
    open_context, daphne_demo, user, password, device, scheme
):
    """In light and dark, on a desktop and a phone: the settings select, the answer's model
    label and the header's token total are on screen and legible (not the background's
    colour)."""
    options = {"color_scheme": scheme, **(PHONE if device == "phone" else {})}
    page = log_in(open_context(**options), daphne_demo, user, password)
    new_conversation(page)
    sent = send_with_enter(page, "Hello")
    answer_id = sent["assistant_message"]["id"]
    poll_until_final(page, answer_id)

    label = bubble(page, answer_id).get_by_test_id("message-model")
    expect(label).to_be_visible()
    expect(label).to_have_text("demo model")
    usage = page.get_by_test_id("conversation-usage")
    expect(usage).to_be_visible()
    expect(usage.locator("[data-usage-total]")).not_to_have_text("0")
    for element in (label, usage):
        assert element.bounding_box()["width"] > 0
        colour, background = element.evaluate(
            """(el) => {
              let bg = el, colour = getComputedStyle(el).color;
              while (bg && getComputedStyle(bg).backgroundColor === 'rgba(0, 0, 0, 0)') {
                bg = bg.parentElement;
              }
              return [colour, bg ? getComputedStyle(bg).backgroundColor : 'rgb(255, 255, 255)'];
            }"""
        )
        assert colour != background, (device, scheme, colour)
    page.get_by_test_id("conversation-settings-button").click()
    select = page.get_by_test_id("settings-model")
    expect(select).to_be_visible()
    expect(select).to_have_value("demo")
