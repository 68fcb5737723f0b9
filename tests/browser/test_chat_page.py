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

import pytest
from django.contrib.auth.hashers import make_password
from django.utils import timezone
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.browser.helpers import (
    SCREENSHOTS,
    assert_only_prefixes,
    assert_shows_stored_answer,
    log_in,
    new_conversation,
    poll_until_final,
    send_with_enter,
    snapshot,
    wait_for_text,
    wait_until_idle,
    words,
)
from tests.e2e.client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

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
    # What the reader sees (rendered markdown) grew too, and ends as the stored text.
    shown = answer.replace("\n", " ")
    rendered = {s["rendered"] for s in samples if s["status"] == "streaming" and s["rendered"]}
    assert len(rendered) >= 3, f"only {len(rendered)} rendered intermediate states"
    assert all(shown.startswith(text.strip()) for text in rendered), rendered
    assert snapshot(page, assistant_id)["rendered"] == shown
    # Screen readers get the answer from a polite live region, not from the re-rendered DOM.
    expect(page.get_by_test_id("answer-live")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_test_id("answer-live")).to_contain_text("not bold")
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
    assert any(s["stream"] == "reconnecting" for s in samples), "never showed reconnecting"
    wait_until_idle(page)


def test_a_deactivated_users_page_goes_to_the_login_page(
    open_context, daphne_quick_heartbeat, django_user_model, user, password
):
    """The user is deactivated while their conversation page is open (by an `update()`, which
    the server's per-heartbeat check finds; heartbeats are 1 s apart here): the stream ends
    with `auth_revoked` and the page goes to the login page, to come back to the
    conversation, instead of reconnecting."""
    page = log_in(open_context(), daphne_quick_heartbeat, user, password)
    streams: list[int] = []
    page.on(
        "response",
        lambda r: streams.append(r.status) if "/stream/conversations/" in r.url else None,
    )
    conversation_id = new_conversation(page)

    django_user_model.objects.filter(pk=user.pk).update(is_active=False)

    page.wait_for_url(
        f"{daphne_quick_heartbeat.url}/accounts/login/?next=%2Fc%2F{conversation_id}%2F",
        timeout=15_000,
    )
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.wait_for_timeout(2_000)  # any reconnect attempt would have been made by now
    assert streams == [200], f"the page tried to reconnect: {streams}"


def test_after_a_password_change_the_page_signs_in_again_and_comes_back(
    open_context, daphne_quick_heartbeat, django_user_model, user, password
):
    """The user's password changes while their conversation page is open: the page goes to
    the login page; signing in with the new password brings it back to the conversation,
    whose stream opens again."""
    new_password = "a-brand-new-passphrase-7"
    page = log_in(open_context(), daphne_quick_heartbeat, user, password)
    conversation_id = new_conversation(page)

    django_user_model.objects.filter(pk=user.pk).update(password=make_password(new_password))

    page.wait_for_url(re.compile(r"/accounts/login/\?next="), timeout=15_000)
    form = page.get_by_test_id("login-form")
    form.locator("input[name=username]").fill(user.username)
    form.locator("input[name=password]").fill(new_password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{daphne_quick_heartbeat.url}/c/{conversation_id}/")
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


EARLIER_ANSWER = """Sure — the standard library's `csv` module is all you need:

```python
import csv


def column_total(path: str, column: str) -> float:
    with open(path, newline="") as f:
        return sum(float(row[column]) for row in csv.DictReader(f))


print(column_total("sales.csv", "amount"))
```

A few things to keep in mind:

- `newline=""` lets the **csv** module handle line endings itself.
- `DictReader` takes the column names from the first row.
- It reads row by row, so memory stays flat even for large files.

| approach | good for |
|:--|:--|
| `csv` module | small scripts, no dependencies |
| pandas | analysis across many columns |
"""


def _lived_in_conversation(user) -> Conversation:
    """A conversation with one earlier exchange, plus a few older conversations."""
    now = timezone.now()
    older = (
        (400, "Weekend trip ideas for Lisbon"),
        (300, "Regex for ISO dates"),
        (200, "Explain CRDTs like I'm five"),
        (100, "Postgres index for a LIKE query"),
    )
    for minutes, title in older:
        old = Conversation.objects.create(owner=user, title=title, model="claude-sonnet-4-5")
        # The sidebar lists conversations that have a message.
        Message.objects.create(
            conversation=old, role=Message.Role.USER, content=title, created_at=now
        )
        Conversation.objects.filter(pk=old.pk).update(updated_at=now - timedelta(minutes=minutes))
    conversation = Conversation.objects.create(
        owner=user, title="Summing a CSV column in Python", model="claude-sonnet-4-5"
    )
    question = Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="How do I sum one column of a CSV file in Python?",
        created_at=now - timedelta(minutes=2),
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=EARLIER_ANSWER,
        status=Message.Status.COMPLETE,
        stop_reason="end_turn",
        input_tokens=16,
        output_tokens=171,
        reply_to=question,
        created_at=now - timedelta(minutes=2) + timedelta(seconds=5),
        completed_at=now - timedelta(minutes=2) + timedelta(seconds=9),
    )
    return conversation


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def test_readme_screenshots_show_an_answer_mid_stream(
    open_context, daphne_slow_demo, user, password
):
    """With an earlier exchange on the page, a demo answer (paragraphs, a quote, a list, a
    code block) streams into four windows at once — desktop (1280x800) and phone (390x844),
    light and dark — and each is captured mid-answer into docs/screenshots/ on every run.
    The earlier answer is server-rendered markdown with a highlighted code block and a
    table; the streaming one is rendered as it arrives."""
    conversation = _lived_in_conversation(user)
    desktop_context = open_context()
    desktop = log_in(desktop_context, daphne_slow_demo, user, password)
    url = f"{daphne_slow_demo.url}/c/{conversation.pk}/"
    login_state = desktop_context.storage_state()
    pages = {"desktop-light": desktop}
    pages["desktop-dark"] = open_context(color_scheme="dark", storage_state=login_state).new_page()
    for scheme in ("light", "dark"):
        pages[f"phone-{scheme}"] = open_context(
            **PHONE, device_scale_factor=2, color_scheme=scheme, storage_state=login_state
        ).new_page()
    for page in pages.values():
        page.goto(url)
        wait_until_idle(page)
        # The earlier answer's code block is highlighted and has a header with a copy button.
        code = page.locator(".code-block").first
        expect(code.locator(".code-block__lang")).to_have_text("python")
        expect(code.locator(".hljs-keyword").first).to_be_visible()

    sent = send_with_enter(desktop, "How does the streaming work?")
    assistant_id = sent["assistant_message"]["id"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Light: early in the answer, with the earlier (server-rendered) answer above it.
    # Dark: later, with the streaming answer's own code block.
    moments = {"light": "Here is what happens", "dark": '"sk-ant-..."'}
    for name in ("desktop-light", "phone-light", "desktop-dark", "phone-dark"):
        page = pages[name]
        expect(page.locator(f'[data-message-id="{assistant_id}"]')).to_contain_text(
            moments[name.split("-")[1]], timeout=20_000
        )
        page.screenshot(path=SCREENSHOTS / f"chat-{name}.png")
        assert snapshot(page, assistant_id)["status"] == "streaming", f"{name}: not mid-answer"

    assert_shows_stored_answer(desktop, assistant_id)
    for page in pages.values():
        expect(page.locator(f'[data-message-id="{assistant_id}"]')).to_have_attribute(
            "data-status", "complete"
        )
        assert snapshot(page, assistant_id)["text"] == snapshot(desktop, assistant_id)["text"]

    # On a phone the conversations live in a drawer.
    phone = pages["phone-light"]
    phone.get_by_test_id("sidebar-toggle").click()
    expect(phone.get_by_test_id("sidebar")).to_be_in_viewport()
    phone.wait_for_timeout(300)  # the drawer's slide-in transition
    phone.screenshot(path=SCREENSHOTS / "chat-phone-sidebar.png")


def test_readme_screenshots_show_search_an_edited_branch_and_the_model(
    open_context, daphne_demo, user, password
):
    """The README's second row of screenshots, taken on every run: on a desktop, a search
    for a word of an answer lists its conversation with the text around the match, beside a
    question that was edited (its "2 / 2" switcher) under a pinned conversation; on a phone
    in the dark, the edited branch with its answer's model label and the header's token
    total."""
    conversation = _lived_in_conversation(user)
    Conversation.objects.filter(owner=user, title="Regex for ISO dates").update(pinned=True)
    first = conversation.messages.get(role=Message.Role.USER)
    now = timezone.now()
    edited = Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="How do I sum one column of a CSV file with pandas?",
        parent=first.parent,
        created_at=now - timedelta(seconds=30),
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Read it with `pandas.read_csv` and sum the column:\n\n"
        '```python\nimport pandas as pd\n\ntotal = pd.read_csv("sales.csv")["amount"].sum()\n```',
        status=Message.Status.COMPLETE,
        model="demo",
        input_tokens=18,
        output_tokens=42,
        reply_to=edited,
        created_at=now - timedelta(seconds=29),
        completed_at=now - timedelta(seconds=27),
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = f"{daphne_demo.url}/c/{conversation.pk}/"

    desktop = log_in(open_context(), daphne_demo, user, password)
    desktop.goto(url)
    wait_until_idle(desktop)
    expect(desktop.locator("[data-testid=attempt-counter]:visible").first).to_have_text("2 / 2")
    desktop.keyboard.press("Control+k")
    desktop.get_by_test_id("conversation-search").press_sequentially("pandas", delay=20)
    result = desktop.get_by_test_id("search-result")
    expect(result).to_have_count(1)
    expect(result.locator("mark").first).to_be_visible()
    desktop.screenshot(path=SCREENSHOTS / "chat-desktop-search.png")

    phone = log_in(
        open_context(**PHONE, device_scale_factor=2, color_scheme="dark"),
        daphne_demo,
        user,
        password,
    )
    phone.goto(url)
    wait_until_idle(phone)
    expect(phone.locator('[data-role="assistant"]:visible').last).to_contain_text("demo model")
    expect(phone.locator("[data-usage-total]")).to_have_text("247")  # 16 + 171 + 18 + 42
    # The header's actions leave the title its row: it is not cut short on a phone.
    title = phone.get_by_test_id("conversation-title")
    assert title.evaluate("e => e.scrollWidth <= e.clientWidth"), title.bounding_box()
    phone.screenshot(path=SCREENSHOTS / "chat-phone-branch.png")
