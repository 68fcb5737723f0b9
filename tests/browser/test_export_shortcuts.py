"""Export, message times and keyboard shortcuts on the chat page, in a real browser."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import bubble, log_in, send_with_enter, wait_until_idle, words
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
ASKED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def seeded(user) -> tuple[Conversation, list[Message]]:
    """A conversation of two finished exchanges, the first answer regenerated once."""
    conversation = Conversation.objects.create(owner=user, title="Tea notes", model="m")
    at = iter(ASKED + timedelta(seconds=n) for n in range(10))

    def add(role, content, reply_to=None, parent=None):
        return Message.objects.create(
            conversation=conversation,
            role=role,
            content=content,
            created_at=next(at),
            reply_to=reply_to,
            parent=parent,
        )

    q1 = add("user", "How hot for green tea?")
    a1 = add("assistant", "About 80 °C.", q1)
    a2 = add("assistant", "Around **75-80 °C**, for 2 minutes.", q1)
    q2 = add("user", "And black tea?", parent=a2)  # it follows the answer shown
    a3 = add("assistant", "Just off the boil, 3-5 minutes.", q2)
    return conversation, [q1, a1, a2, q2, a3]


def open_seeded(context, server, user, password):
    conversation, messages = seeded(user)
    page = log_in(context, server, user, password)
    page.goto(f"{server.url}/c/{conversation.pk}/")
    wait_until_idle(page)
    return page, conversation, messages


def test_export_menu_downloads_markdown_and_json(open_context, daphne_anthropic, user, password):
    """The header's Export menu offers Markdown and JSON; each downloads a file named after
    the conversation holding every message (the regenerated answer marked)."""
    page, _, messages = open_seeded(open_context(), daphne_anthropic, user, password)
    today = datetime.now(UTC).strftime("%Y-%m-%d")

    page.get_by_test_id("export-button").click()
    with page.expect_download() as markdown_download:
        page.get_by_test_id("export-markdown").click()
    markdown = markdown_download.value
    assert markdown.suggested_filename == f"tea-notes-{today}.md"
    text = Path(markdown.path()).read_text(encoding="utf-8")
    assert text.startswith("# Tea notes\n")
    for message in messages:
        assert message.content in text
    assert "## You · 2026-03-04 05:06:07 UTC" in text
    assert "*Answer 1 of 2 to this message (replaced by a regenerated answer)*" in text

    page.get_by_test_id("export-button").click()
    with page.expect_download() as json_download:
        page.get_by_test_id("export-json").click()
    assert json_download.value.suggested_filename == f"tea-notes-{today}.json"
    document = json.loads(Path(json_download.value.path()).read_text(encoding="utf-8"))
    assert [m["id"] for m in document["messages"]] == [str(m.pk) for m in messages]
    assert [m["superseded"] for m in document["messages"]] == [False, True, False, False, False]


def test_export_menu_closes_with_escape_and_outside_clicks(
    open_context, daphne_anthropic, user, password
):
    page, _, _ = open_seeded(open_context(), daphne_anthropic, user, password)
    menu = page.get_by_test_id("export-menu")
    page.get_by_test_id("export-button").click()
    expect(page.get_by_test_id("export-json")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("export-json")).to_be_hidden()
    expect(page.get_by_test_id("export-button")).to_be_focused()
    page.get_by_test_id("export-button").click()
    expect(menu).to_have_attribute("open", "")
    page.get_by_test_id("thread").click(position={"x": 10, "y": 10})
    expect(page.get_by_test_id("export-json")).to_be_hidden()


def test_hovering_a_message_shows_its_local_time(open_context, daphne_anthropic, user, password):
    """Each message's time is in the reader's time zone and locale; on a desktop it shows
    when the message is hovered, with the full date and time as its title."""
    context = open_context(timezone_id="Asia/Tokyo", locale="en-GB")
    page, _, messages = open_seeded(context, daphne_anthropic, user, password)
    question = bubble(page, str(messages[0].pk))
    time = question.get_by_test_id("message-time")

    expect(time).to_have_attribute("datetime", "2026-03-04T05:06:07+00:00")
    copy = question.get_by_test_id("copy-message-button")
    expect(time).to_have_css("opacity", "0")
    expect(copy).to_have_css("opacity", "0")
    question.hover()
    expect(time).to_have_css("opacity", "1")
    expect(copy).to_have_css("opacity", "1")  # the message's actions show with it
    expect(time).to_contain_text("14:06")  # 05:06 UTC is 14:06 in Tokyo
    title = time.get_attribute("title")
    assert "14:06:07" in title
    assert "2026" in title
    assert "March" in title


def test_a_new_exchange_gets_its_times(open_context, daphne_anthropic, user, password):
    """A sent message and its streamed answer show their times (the answer's from
    `message_start`), in the reader's time zone."""
    context = open_context(timezone_id="America/New_York", locale="en-US")
    page, _, _ = open_seeded(context, daphne_anthropic, user, password)
    sent = send_with_enter(page, "One more?")
    answer_id = sent["assistant_message"]["id"]
    wait_for_final(answer_id)
    for message in (sent["user_message"], sent["assistant_message"]):
        time = bubble(page, message["id"]).get_by_test_id("message-time")
        expect(time).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
        expected = page.evaluate(
            """(iso) => new Intl.DateTimeFormat(undefined,
                 {hour: "numeric", minute: "2-digit"}).format(new Date(iso))""",
            message["created_at"],
        )
        expect(time).to_have_text(expected)


def test_question_mark_opens_the_shortcuts_dialog(open_context, daphne_anthropic, user, password):
    """`?` outside a text field opens "Keyboard shortcuts", listing every shortcut with Ctrl
    (not on a Mac); Esc closes it; in the composer `?` is just typed. The header's keyboard
    button opens the same dialog."""
    page, _, _ = open_seeded(open_context(), daphne_anthropic, user, password)
    dialog = page.get_by_test_id("shortcuts-dialog")
    composer = page.get_by_test_id("composer-input")

    composer.press("?")
    expect(composer).to_have_value("?")
    expect(dialog).to_be_hidden()
    composer.fill("")

    page.get_by_test_id("thread").focus()
    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Keyboard shortcuts")
    rows = dialog.locator(".shortcuts__row")
    expect(rows).to_have_count(8)
    for label, keys in (
        ("Send the message", "Enter"),
        ("New line", "Shift Enter"),
        ("Stop the answer", "Esc"),
        ("New conversation", "Ctrl Shift O"),
        ("Copy the last answer", "Ctrl Shift C"),
        ("Focus the message box", "Shift Esc"),
        ("Search conversations", "Ctrl K"),
        ("Show these shortcuts", "?"),
    ):
        row = rows.filter(has_text=label)
        expect(row.locator("dd")).to_have_text(keys)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.get_by_test_id("shortcuts-button").click()
    expect(dialog).to_be_visible()
    dialog.get_by_test_id("shortcuts-close").click()
    expect(dialog).to_be_hidden()


def test_a_mac_is_shown_command_keys_and_they_work(open_context, daphne_anthropic, user, password):
    """On a Mac the dialog says ⌘ and ⌘+Shift+O starts a new conversation."""
    context = open_context()
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'platform', {get: () => 'MacIntel'});"
    )
    page, _, _ = open_seeded(context, daphne_anthropic, user, password)
    page.get_by_test_id("shortcuts-button").click()
    row = page.get_by_test_id("shortcuts-dialog").locator(".shortcuts__row")
    expect(row.filter(has_text="New conversation").locator("dd")).to_have_text("⌘ Shift O")
    page.keyboard.press("Escape")
    page.keyboard.press("Meta+Shift+O")
    page.wait_for_url(f"{daphne_anthropic.url}/")


def test_shortcuts_copy_the_last_answer_focus_the_composer_and_start_a_new_chat(
    open_context, daphne_anthropic, user, password
):
    """Ctrl+Shift+C puts the last answer's text (its markdown) on the clipboard, Shift+Esc
    focuses the composer, Ctrl+Shift+O goes to a new conversation (the home page)."""
    context = open_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daphne_anthropic.url)
    page, _, messages = open_seeded(context, daphne_anthropic, user, password)
    page.get_by_test_id("thread").focus()

    page.keyboard.press("Control+Shift+C")
    expect(page.get_by_test_id("answer-live")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == messages[-1].content

    composer = page.get_by_test_id("composer-input")
    expect(composer).not_to_be_focused()
    page.keyboard.press("Shift+Escape")
    expect(composer).to_be_focused()

    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(f"{daphne_anthropic.url}/")
    assert Conversation.objects.filter(owner=user).count() == 1


def test_shift_escape_does_not_stop_an_answer(open_context, daphne_anthropic, user, password):
    """Shift+Esc is "focus the message box", never Esc's "stop the answer": an answer
    streaming meanwhile goes on (no cancel request), and plain Esc still stops it."""
    page, _, _ = open_seeded(open_context(), daphne_anthropic, user, password)
    cancels = []
    page.on("request", lambda r: cancels.append(r.url) if r.url.endswith("/cancel/") else None)
    sent = send_with_enter(page, f"Go on {fake(text=words(80, 'w'), tps=10)}")
    answer = bubble(page, sent["assistant_message"]["id"])
    expect(answer).to_have_attribute("data-status", "streaming")

    page.keyboard.press("Shift+Escape")
    page.wait_for_timeout(300)
    assert cancels == []
    expect(answer).to_have_attribute("data-status", "streaming")

    page.keyboard.press("Escape")
    expect(answer).to_have_attribute("data-status", "cancelled")
    assert len(cancels) == 1


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_export_time_and_shortcuts_show_in_every_theme_and_size(
    open_context, daphne_anthropic, user, password, scheme, device
):
    """In light and dark, on a desktop and a phone: the Export menu opens with both links in
    view, a message's time can be seen (on a phone without hovering), and the shortcuts
    dialog opens from its header button, in view, in the theme's colours."""
    options = {"color_scheme": scheme, **(PHONE if device == "phone" else {})}
    page, _, messages = open_seeded(open_context(**options), daphne_anthropic, user, password)

    page.get_by_test_id("export-button").click()
    for testid in ("export-markdown", "export-json"):
        expect(page.get_by_test_id(testid)).to_be_in_viewport()
    page.keyboard.press("Escape")

    question = bubble(page, str(messages[0].pk))
    if device == "desktop":
        question.hover()
    else:
        question.scroll_into_view_if_needed()
    time = question.get_by_test_id("message-time")
    expect(time).to_be_visible()
    expect(time).to_have_css("opacity", "1")

    page.get_by_test_id("shortcuts-button").click()
    dialog = page.get_by_test_id("shortcuts-dialog")
    expect(dialog).to_be_in_viewport(ratio=1)
    background = dialog.evaluate("(d) => getComputedStyle(d).backgroundColor")
    dark_background = background in ("rgb(48, 48, 46)",)
    assert dark_background == (scheme == "dark"), background
