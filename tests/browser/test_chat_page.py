"""The chat page in a real browser: Debian's Chromium driven by Playwright, real daphne.

Every test logs in through the login form, drives the page only through what a person can
do (type, press keys, reload, lose the network) and checks what the page shows against the
database. The answers come from the fake Anthropic server (known text at a known pace) or,
for the README screenshots, from the offline demo model at a readable pace.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
FINAL = {"complete", "cancelled", "failed", "interrupted"}
POLL_MS = 50

# Reads one message as the page shows it, plus the composer's state, in one round trip.
SNAPSHOT_JS = """(id) => {
  const all = document.querySelectorAll(
    `[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
  const bubble = all[0];
  const input = document.querySelector('[data-testid="composer-input"]');
  const send = document.querySelector('[data-testid="send-button"]');
  return {
    count: all.length,
    text: bubble ? bubble.querySelector('[data-testid="message-body"]').textContent : null,
    status: bubble ? bubble.dataset.status : null,
    inputDisabled: input.disabled,
    sendDisabled: send.disabled,
    stream: document.querySelector('[data-testid="stream-status"]').dataset.state,
  };
}"""


# --------------------------------------------------------------------------- helpers


def log_in(context, server, user, password) -> Page:
    """Open the login page and sign in through the form; returns the page on the home page."""
    page = context.new_page()
    page.goto(f"{server.url}/accounts/login/")
    form = page.get_by_test_id("login-form")
    form.locator("input[name=username]").fill(user.username)
    form.locator("input[name=password]").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{server.url}/")
    return page


def wait_until_idle(page: Page) -> None:
    """The page's stream is open and no answer is in progress."""
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "idle")


def new_conversation(page: Page) -> str:
    """Click "New conversation"; returns the new conversation's id once its stream is open."""
    page.get_by_test_id("new-conversation").click()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    wait_until_idle(page)
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def send_with_enter(page: Page, content: str) -> dict:
    """Type `content` into the composer and press Enter; returns the API's 201 body."""
    composer = page.get_by_test_id("composer-input")
    composer.fill(content)
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/messages/")
    ) as sent:
        composer.press("Enter")
    assert sent.value.status == 201, sent.value.text()
    return sent.value.json()


def snapshot(page: Page, message_id: str) -> dict:
    return page.evaluate(SNAPSHOT_JS, message_id)


def poll_until_final(page: Page, message_id: str, timeout: float = 15.0) -> list[dict]:
    """Snapshots of the message every POLL_MS until the page shows a final status."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(snapshot(page, message_id))
        if samples[-1]["status"] in FINAL:
            return samples
        page.wait_for_timeout(POLL_MS)
    raise AssertionError(f"no final status in the page after {timeout}s; last: {samples[-1]}")


def wait_for_text(page: Page, message_id: str, *, min_chars: int, timeout: float = 15.0) -> dict:
    """Poll until the streaming bubble shows at least `min_chars` characters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = snapshot(page, message_id)
        if seen["text"] and len(seen["text"]) >= min_chars:
            return seen
        page.wait_for_timeout(POLL_MS)
    raise AssertionError(f"bubble never reached {min_chars} chars; last: {seen}")


def assert_only_prefixes(samples: list[dict], final: str) -> None:
    """Every text the page showed was a prefix of the final text: nothing repeated or wrong."""
    for sample in samples:
        text = sample["text"] or ""
        assert final.startswith(text), f"page showed text that is not a prefix: {text!r}"


def words(n: int, tag: str) -> str:
    """Distinct, known answer text: repeated or missing pieces would be visible."""
    return " ".join(f"{tag}{i:03d}" for i in range(n))


def assert_shows_stored_answer(page: Page, message_id: str) -> Message:
    """The final bubble is the one and only bubble for the message and equals the DB row."""
    message = wait_for_final(message_id)
    seen = snapshot(page, message_id)
    assert seen["count"] == 1
    assert seen["status"] == message.status == Message.Status.COMPLETE
    assert seen["text"] == message.content
    return message


# --------------------------------------------------------------------------- tests


def test_answer_streams_into_the_page_and_matches_the_stored_message(
    open_context, daphne_anthropic, user, password
):
    """Log in, start a conversation, send with Enter: the answer grows in place (several
    intermediate prefixes of the final text), ends `complete` with exactly the stored text,
    and the composer is disabled while the answer streams and enabled (and focused) after."""
    answer = "Streaming, piece by piece: " + words(25, "w") + ".\nSecond line ✓ <b>not bold</b>"
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)

    sent = send_with_enter(page, f"Tell me something slowly {fake(text=answer, tps=15)}")
    assistant_id = sent["assistant_message"]["id"]
    samples = poll_until_final(page, assistant_id)

    message = assert_shows_stored_answer(page, assistant_id)
    assert message.content == answer
    assert len(answer) // 4 >= 30  # 4 characters per delta: 30+ deltas at 15 per second
    assert_only_prefixes(samples, answer)
    texts = [s["text"] for s in samples]
    assert all(a == b[: len(a)] for a, b in itertools.pairwise(texts)), "text shrank"
    intermediate = {s["text"] for s in samples if s["text"] and s["text"] != answer}
    assert len(intermediate) >= 3, f"only {len(intermediate)} intermediate states seen"
    streaming = [s for s in samples if s["status"] in ("pending", "streaming")]
    assert streaming, "the page never showed the answer in progress"
    for sample in streaming:
        assert sample["inputDisabled"] and sample["sendDisabled"], sample
    composer = page.get_by_test_id("composer-input")
    expect(composer).to_be_enabled()
    expect(page.get_by_test_id("send-button")).to_be_enabled()
    expect(composer).to_be_focused()
    wait_until_idle(page)
    # The page does not interpret the answer as HTML.
    expect(page.locator('[data-testid="message-body"] b')).to_have_count(0)


def test_reconnect_after_the_stream_token_expired_resumes_without_gap_or_repeat(
    open_context, daphne_short_token, droppable_proxy, user, password
):
    """Stream tokens live 2 s. Mid-answer, after the page's token expired, the connection
    drops: the browser's EventSource reconnects by itself with the expired token and is
    refused (401), the page mints a new token and resumes after its last event. The page
    ends `complete` with exactly the stored text: nothing missing, nothing repeated."""
    answer = words(72, "t")  # 72 words of 5 characters = 90 deltas at 12/s: about 7.5 s
    proxy = droppable_proxy(daphne_short_token.url)
    page = log_in(open_context(), proxy, user, password)
    streams: list[tuple[int, str]] = []
    page.on(
        "response",
        lambda r: streams.append((r.status, r.url)) if "/stream/conversations/" in r.url else None,
    )
    new_conversation(page)
    token_minted = time.monotonic()  # the page minted its token before its stream opened

    sent = send_with_enter(page, f"Slow please {fake(text=answer, tps=12)}")
    assistant_id = sent["assistant_message"]["id"]
    wait_for_text(page, assistant_id, min_chars=12)
    page.wait_for_timeout(max(0.0, 2.3 - (time.monotonic() - token_minted)) * 1000)
    assert snapshot(page, assistant_id)["status"] == "streaming", "answer ended before the drop"
    assert [status for status, _ in streams] == [200]

    assert proxy.drop_connections() > 0
    samples = poll_until_final(page, assistant_id)

    message = assert_shows_stored_answer(page, assistant_id)
    assert message.content == answer
    assert_only_prefixes(samples, answer)
    statuses = [status for status, _ in streams]
    assert statuses[:2] == [200, 401], f"the expired token was not refused: {streams}"
    assert statuses[-1] == 200, f"no new stream after the refusal: {streams}"
    assert "last_event_id=" in streams[-1][1], f"the new stream did not resume: {streams}"
    assert any(s["status"] == "streaming" for s in samples[len(samples) // 2 :]), (
        "the answer did not keep streaming after the reconnection"
    )
    wait_until_idle(page)


def test_reload_mid_answer_shows_the_whole_answer_once(
    open_context, daphne_anthropic, user, password
):
    """Reload while the answer streams: the reloaded page picks the answer up where it is,
    keeps streaming, and ends showing exactly the stored text, in exactly one bubble."""
    answer = words(50, "r")  # 50 words of 5 characters = 63 deltas at 20/s: about 3 s
    page = log_in(open_context(), daphne_anthropic, user, password)
    new_conversation(page)
    sent = send_with_enter(page, f"Reload me {fake(text=answer, tps=20)}")
    assistant_id = sent["assistant_message"]["id"]
    wait_for_text(page, assistant_id, min_chars=30)

    page.reload()
    after_reload = snapshot(page, assistant_id)
    assert after_reload["status"] in ("pending", "streaming"), "answer ended before the reload"
    samples = [after_reload, *poll_until_final(page, assistant_id)]

    message = assert_shows_stored_answer(page, assistant_id)
    assert message.content == answer
    assert_only_prefixes(samples, answer)
    assert any(s["status"] == "streaming" for s in samples), "no live streaming after reload"
    user_bubbles = page.locator(f'[data-message-id="{sent["user_message"]["id"]}"]')
    expect(user_bubbles).to_have_count(1)
    expect(page.locator('[data-testid="message"]')).to_have_count(2)


def test_enter_sends_and_shift_enter_inserts_a_newline(
    open_context, daphne_anthropic, user, password
):
    """Shift+Enter puts a newline into the composer and sends nothing; Enter sends the message,
    newline included, and clears the composer."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    conversation_id = new_conversation(page)
    composer = page.get_by_test_id("composer-input")
    composer.focus()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(composer).to_have_value("first line\nsecond line")
    page.wait_for_timeout(200)
    expect(page.get_by_test_id("message")).to_have_count(0)
    assert not Message.objects.filter(conversation_id=conversation_id).exists()

    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/messages/")
    ) as sent:
        page.keyboard.press("Enter")
    body = sent.value.json()
    user_bubble = page.locator(f'[data-message-id="{body["user_message"]["id"]}"]')
    expect(user_bubble.get_by_test_id("message-body")).to_have_text("first line\nsecond line")
    expect(composer).to_have_value("")
    stored = Message.objects.get(pk=body["user_message"]["id"])
    assert stored.content == "first line\nsecond line"
    assert stored.role == Message.Role.USER
    wait_for_final(body["assistant_message"]["id"])  # let the run finish before teardown


def _lived_in_conversation(user) -> Conversation:
    """A conversation with one earlier exchange, plus two older conversations in the sidebar."""
    now = timezone.now()
    for minutes, title in ((90, "Weekend trip ideas for Lisbon"), (60, "Regex for ISO dates")):
        old = Conversation.objects.create(owner=user, title=title, model="claude-demo")
        Conversation.objects.filter(pk=old.pk).update(updated_at=now - timedelta(minutes=minutes))
    conversation = Conversation.objects.create(owner=user, title="", model="claude-demo")
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="What is chatsite?",
        created_at=now - timedelta(minutes=2),
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=(
            "chatsite is a small Django site where you chat with Claude and watch each "
            "answer appear as it is written, streamed over Server-Sent Events.\n\n"
            "Conversations are saved, so you can come back to them later."
        ),
        status=Message.Status.COMPLETE,
        stop_reason="end_turn",
        created_at=now - timedelta(minutes=2) + timedelta(seconds=5),
        completed_at=now - timedelta(minutes=2) + timedelta(seconds=9),
    )
    return conversation


def test_readme_screenshots_show_an_answer_mid_stream(
    open_context, daphne_slow_demo, user, password
):
    """With an earlier exchange on the page, a demo answer (paragraphs, a list, a code block)
    streams into a desktop window (1280x800) and, in another tab, a phone-sized one (390x844);
    both are captured mid-answer into docs/screenshots/ on every run."""
    conversation = _lived_in_conversation(user)
    desktop_context = open_context()
    desktop = log_in(desktop_context, daphne_slow_demo, user, password)
    url = f"{daphne_slow_demo.url}/c/{conversation.pk}/"
    desktop.goto(url)
    wait_until_idle(desktop)
    phone = open_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        storage_state=desktop_context.storage_state(),
    ).new_page()
    phone.goto(url)
    wait_until_idle(phone)

    sent = send_with_enter(desktop, "How does the streaming work?")
    assistant_id = sent["assistant_message"]["id"]
    for page in (desktop, phone):
        expect(
            page.locator(f'[data-message-id="{assistant_id}"] [data-testid="message-body"]')
        ).to_contain_text('ANTHROPIC_API_KEY = "sk-ant-..."', timeout=15_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    desktop.screenshot(path=SCREENSHOTS / "chat-streaming.png")
    phone.screenshot(path=SCREENSHOTS / "chat-phone.png")
    for page in (desktop, phone):  # still streaming after the shots: they are mid-answer
        assert snapshot(page, assistant_id)["status"] == "streaming"

    assert_shows_stored_answer(desktop, assistant_id)
    expect(phone.locator(f'[data-message-id="{assistant_id}"]')).to_have_attribute(
        "data-status", "complete"
    )
    assert snapshot(phone, assistant_id)["text"] == snapshot(desktop, assistant_id)["text"]
