"""What the browser tests do on the chat page, as a person would: log in, type, press keys."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
from playwright.sync_api import Locator, Page, expect

from chat.models import Message
from tests.e2e.client import wait_for_final

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
FINAL = {"complete", "cancelled", "failed", "interrupted"}
POLL_MS = 50

# Reads one message as the page shows it, plus the composer's state, in one round trip.
# `text` is the raw text the page holds for the message (what Copy copies, and what the
# markdown is rendered from); `rendered` is what the reader sees.
SNAPSHOT_JS = """(id) => {
  const all = document.querySelectorAll(
    `[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
  const bubble = all[0];
  const input = document.querySelector('[data-testid="composer-input"]');
  const send = document.querySelector('[data-testid="send-button"]');
  const source = bubble && bubble.querySelector('[data-testid="message-source"]');
  return {
    count: all.length,
    text: source ? source.content.textContent : null,
    rendered: bubble ? bubble.querySelector('[data-testid="message-body"]').innerText : null,
    status: bubble ? bubble.dataset.status : null,
    hidden: bubble ? bubble.hidden : null,
    inputDisabled: input.disabled,
    sendDisabled: send.disabled,
    stream: document.querySelector('[data-testid="stream-status"]').dataset.state,
  };
}"""


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


def conversation_id_of(page: Page) -> str:
    return page.url.rstrip("/").rsplit("/", 1)[-1]


# Creates an empty conversation through the API with the page's session, as any client can.
CREATE_CONVERSATION_JS = """async () => {
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const response = await fetch("/api/v1/conversations/", {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
    body: "{}",
  });
  return (await response.json()).id;
}"""


def new_conversation(page: Page) -> str:
    """Open a new, empty conversation's page; returns its id once its stream is open.

    The page's "New conversation" makes nothing until the first message is sent (see
    test_new_chat.py), so the conversation is made through the API, as any client can,
    and its page opened: tests that need an open stream before their first send start here.
    """
    conversation_id = page.evaluate(CREATE_CONVERSATION_JS)
    page.goto(urljoin(page.url, f"/c/{conversation_id}/"))
    wait_until_idle(page)
    return conversation_id


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


def bubble(page: Page, message_id: str) -> Locator:
    return page.locator(f'[data-testid="message"][data-message-id="{message_id}"]')


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
    """Poll until the streaming bubble holds at least `min_chars` characters."""
    deadline = time.monotonic() + timeout
    seen = None
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
    """The final bubble is the one and only bubble for the message and equals the DB row,
    both as the text the page holds and as the text it shows."""
    message = wait_for_final(message_id)
    expect(bubble(page, message_id)).to_have_attribute("data-status", message.status)
    seen = snapshot(page, message_id)
    assert seen["count"] == 1
    assert seen["status"] == message.status == Message.Status.COMPLETE
    assert seen["text"] == message.content
    return message


def fake_stats(fake_anthropic) -> dict:
    return httpx.get(f"{fake_anthropic.url}/_fake/stats", timeout=5).json()


def wait_for_stats(fake_anthropic, predicate, timeout: float = 10.0) -> dict:
    """Poll the fake upstream's counters until `predicate(stats)` holds."""
    deadline = time.monotonic() + timeout
    stats = fake_stats(fake_anthropic)
    while not predicate(stats):
        assert time.monotonic() < deadline, f"fake upstream never got there: {stats}"
        time.sleep(0.05)
        stats = fake_stats(fake_anthropic)
    return stats


def csp_violations(page: Page) -> list[str]:
    """Collects console messages about Content-Security-Policy violations on `page`."""
    found: list[str] = []
    page.on(
        "console",
        lambda m: found.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return found


def console_errors(page: Page) -> list[str]:
    """Collects what goes wrong in `page`'s scripts: console errors (a module that failed to
    load or link, a CSP violation, a failed request) and uncaught exceptions."""
    found: list[str] = []
    page.on("console", lambda m: found.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: found.append(f"uncaught: {error}"))
    return found
