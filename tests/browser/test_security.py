"""Untrusted model output in a real browser, and the site's pages under the strict CSP.

The fake Anthropic server streams markup written to run script or fetch a remote image.
Each payload would set `window.__xss`; the tests check that it never does, live and after
a reload (server-rendered), and that the image host is never contacted. The host is
203.0.113.9 (TEST-NET-3): if anything did try it, the request would show up in Playwright
and go nowhere.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message
from tests.browser.helpers import (
    assert_shows_stored_answer,
    bubble,
    console_errors,
    csp_violations,
    log_in,
    new_conversation,
    send_with_enter,
    wait_until_idle,
)
from tests.e2e.client import fake

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE_HOST = "203.0.113.9"
PAYLOAD = f"""Here is everything you asked for.

<img src=x onerror="window.__xss = 'img onerror'">

<script>window.__xss = 'script block'</script>

An inline <script>window.__xss = 'inline script'</script> too.

[click me](javascript:window.__xss='javascript link')

<a href="javascript:window.__xss='html link'">html link</a>

<svg onload="window.__xss = 'svg onload'"><circle r="5"></circle></svg>

<iframe srcdoc="<script>parent.__xss = 'iframe'</script>"></iframe>

<div style="background:url(http://{IMAGE_HOST}/bg.png)" onmouseover="window.__xss=1">hover</div>

![a tracking pixel](http://{IMAGE_HOST}/pixel.png)

A [normal link](https://example.com/docs) and **the end**.
"""

# Everything an element in a rendered message may carry, and nothing else.
INSPECT_JS = """(id) => {
  const body = document.querySelector(
    `[data-message-id="${CSS.escape(id)}"] [data-testid="message-body"]`);
  const elements = [...body.querySelectorAll("*")];
  return {
    xss: window.__xss === undefined ? null : String(window.__xss),
    tags: [...new Set(elements.map((e) => e.tagName.toLowerCase()))].sort(),
    handlers: elements.flatMap((e) => [...e.attributes].map((a) => a.name))
      .filter((name) => name.startsWith("on") || name === "style" || name === "src"),
    links: [...body.querySelectorAll("a")].map((a) => ({
      href: a.getAttribute("href"), rel: a.rel, target: a.target, text: a.textContent,
      cls: a.className,
    })),
    text: body.textContent,
  };
}"""

ALLOWED_TAGS = {"p", "a", "strong", "em", "code", "pre", "span", "div", "button", "svg", "use"}


def assert_inert(page: Page, message_id: str) -> dict:
    seen = page.evaluate(INSPECT_JS, message_id)
    assert seen["xss"] is None, f"a payload ran: {seen['xss']}"
    assert set(seen["tags"]) <= ALLOWED_TAGS, seen["tags"]
    # svg/use/button/div/span only come from our own code-block header, never from the text.
    assert not {"img", "script", "iframe", "object", "embed"} & set(seen["tags"])
    assert seen["handlers"] == [], seen["handlers"]
    for link in seen["links"]:
        assert link["href"].startswith(("http://", "https://", "mailto:")), link
        assert link["rel"] == "noopener noreferrer", link
        assert link["target"] == "_blank", link
    return seen


def test_model_output_cannot_run_script_or_fetch_remote_images(
    open_context, daphne_anthropic, user, password
):
    """A streamed answer full of XSS payloads, split into 2-character deltas, renders as
    harmless text both live and after a reload: no payload runs, javascript: links are not
    links, the markdown image is only a link, and no request ever goes to the image host."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    violations = csp_violations(page)
    new_conversation(page)

    # The user's own message carries a payload too: it is shown as typed.
    sent = send_with_enter(
        page,
        f"<img src=x onerror=\"window.__xss='user'\"> {fake(text=PAYLOAD, tps=80, chunk=2)}",
    )
    assistant_id = sent["assistant_message"]["id"]
    samples = 0
    deadline = time.monotonic() + 20
    while page.evaluate(
        "(id) => document.querySelector(`[data-message-id='${id}']`).dataset.status", assistant_id
    ) in ("pending", "streaming"):
        assert time.monotonic() < deadline, "the answer never finished"
        assert_inert(page, assistant_id)
        samples += 1
        page.wait_for_timeout(100)
    assert samples >= 3, "the answer was not inspected while it streamed"
    message = assert_shows_stored_answer(page, assistant_id)
    assert message.content == PAYLOAD

    for when in ("live", "after reload"):
        if when == "after reload":
            page.reload()
            wait_until_idle(page)
        seen = assert_inert(page, assistant_id)
        assert "<script>window.__xss = 'script block'</script>" in seen["text"], when
        assert "[click me](javascript:window.__xss='javascript link')" in seen["text"], when
        assert [link["href"] for link in seen["links"]] == [
            f"http://{IMAGE_HOST}/pixel.png",
            "https://example.com/docs",
        ], when
        assert seen["links"][0]["cls"] == "md-image"
        assert seen["links"][0]["text"] == "a tracking pixel"
        user_text = bubble(page, sent["user_message"]["id"]).get_by_test_id("message-body")
        expect(user_text).to_contain_text("<img src=x onerror=")
        expect(page.locator("[data-testid=thread] img")).to_have_count(0)

    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert not [url for url in requests if IMAGE_HOST in url], requests
    # Nothing even tried: the CSP had nothing to block.
    assert violations == []


def test_an_older_answer_loaded_on_scroll_is_as_inert_as_a_rendered_one(
    open_context, daphne_short_pages, user, password
):
    """An answer full of XSS payloads, old enough that the page loads it from the API when
    the reader scrolls up, shows the server's sanitized HTML: no payload runs, only http(s)
    links are links, and nothing is fetched from the image host."""
    conversation = Conversation.objects.create(owner=user, model="demo")
    start = timezone.now() - timedelta(hours=1)
    rows = []
    for number in range(10):  # pages of 4: the payload (1) is two pages back
        question = rows[-1] if number % 2 else None
        rows.append(
            Message(
                conversation=conversation,
                role="assistant" if number % 2 else "user",
                reply_to=question,
                content=PAYLOAD if number == 1 else f"message {number}\n\n" + "long " * 400,
                created_at=start + timedelta(seconds=number),
            )
        )
    Message.objects.bulk_create(rows)
    payload_id = str(rows[1].pk)
    page = log_in(open_context(), daphne_short_pages, user, password)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    violations = csp_violations(page)
    page.goto(f"{daphne_short_pages.url}/c/{conversation.pk}/")
    wait_until_idle(page)
    expect(bubble(page, payload_id)).to_have_count(0)

    for _ in range(50):  # scroll up until the page has loaded it
        if bubble(page, payload_id).count():
            break
        page.get_by_test_id("thread").evaluate("(el) => { el.scrollTop = 0; }")
        page.wait_for_timeout(100)
    expect(bubble(page, payload_id)).to_be_attached()
    expect(page.get_by_test_id("older-messages")).to_be_hidden()

    seen = assert_inert(page, payload_id)
    assert "<script>window.__xss = 'script block'</script>" in seen["text"]
    assert [link["href"] for link in seen["links"]] == [
        f"http://{IMAGE_HOST}/pixel.png",
        "https://example.com/docs",
    ]
    assert seen["links"][0]["cls"] == "md-image"
    expect(page.locator("[data-testid=thread] img")).to_have_count(0)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert not [url for url in requests if IMAGE_HOST in url], requests
    assert violations == []


def test_csp_blocks_inline_script_on_the_chat_page(open_context, daphne_anthropic, user, password):
    """The chat page runs under a CSP without 'unsafe-inline': an inline script added to the
    page does not run and is reported as a violation."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    violations = csp_violations(page)
    response = page.goto(f"{daphne_anthropic.url}/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "img-src 'self' data:" in policy
    assert response.headers["referrer-policy"] == "same-origin"

    ran = page.evaluate(
        """() => new Promise((resolve) => {
          document.addEventListener("securitypolicyviolation",
            (e) => resolve({ran: window.__probe === 1, directive: e.effectiveDirective}),
            {once: true});
          const script = document.createElement("script");
          script.textContent = "window.__probe = 1";
          document.body.append(script);
        })"""
    )
    assert ran == {"ran": False, "directive": "script-src-elem"}
    page.wait_for_timeout(100)
    assert violations, "the blocked inline script was not reported"


def test_page_script_modules_load_under_the_csp_without_errors(
    open_context, daphne_anthropic, user, password
):
    """The page script is a set of same-origin ES modules (static/chat/main.js imports the
    rest): on the home page and on a conversation page every module is fetched and runs (the
    stream opens, an answer streams in as markdown, the sidebar toggles), with no console
    error, uncaught exception or CSP violation."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    errors = console_errors(page)
    page.reload()
    new_conversation(page)  # a conversation page: its script runs and its stream opens
    scripts = page.evaluate(
        """() => performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname)
              .filter((path) => path.startsWith("/static/chat/"))
              .map((path) => path.split("/").pop())"""
    )
    modules = {"page", "api", "stream", "messages", "composer", "sidebar", "dialogs", "main"}
    modules |= {"branches", "edit"}
    modules |= {"conversation-list", "search"}
    modules |= {"shortcuts", "menus", "times"}
    assert {f"{name}.js" for name in modules} | {"markdown.js"} <= set(scripts), scripts

    sent = send_with_enter(page, fake(text="A **bold** answer.", tps=40, chunk=3))
    answer = bubble(page, sent["assistant_message"]["id"])
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator("[data-testid=message-body] strong")).to_have_text("bold")

    page.get_by_test_id("sidebar-close").click()
    expect(page.get_by_test_id("sidebar-toggle")).to_have_attribute("aria-expanded", "false")
    page.get_by_test_id("sidebar-toggle").click()
    expect(page.get_by_test_id("sidebar-toggle")).to_have_attribute("aria-expanded", "true")
    page.wait_for_timeout(100)
    assert errors == []


def test_swagger_ui_renders_its_operations_under_the_csp(
    open_context, daphne_anthropic, user, password
):
    """/api/v1/docs/ (drf-spectacular's Swagger UI, whose init script is inline) works under
    the CSP thanks to a per-response nonce: the operations render, nothing is blocked."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    violations = csp_violations(page)
    response = page.goto(f"{daphne_anthropic.url}/api/v1/docs/")
    assert "'nonce-" in response.headers["content-security-policy"]

    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    operation = page.locator(".opblock-summary", has_text="/api/v1/conversations/").first
    expect(operation).to_be_visible()
    operation.click()
    expect(page.locator(".opblock-body").first).to_be_visible()
    assert violations == []


def test_django_admin_works_under_the_csp(open_context, daphne_anthropic, django_user_model):
    """The Django admin (its own static CSS and JS) works under the CSP: log in, list
    messages, open one; nothing is blocked."""
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    page = open_context().new_page()
    violations = csp_violations(page)
    page.goto(f"{daphne_anthropic.url}/admin/login/")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", "pw-root-1")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()

    from chat.models import Conversation

    conversation = Conversation.objects.create(owner=admin, title="Admin check", model="m")
    Message.objects.create(conversation=conversation, role="user", content="hello admin")
    page.goto(f"{daphne_anthropic.url}/admin/chat/message/")
    expect(page.locator("#result_list")).to_contain_text("Admin check")
    # The admin's stylesheet applied (a static file under 'self').
    header_bg = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
    assert header_bg not in ("rgba(0, 0, 0, 0)", "transparent")
    # Its JavaScript runs: the "select all" checkbox ticks every row.
    page.locator("#action-toggle").check()
    expect(page.locator("input.action-select").first).to_be_checked()
    assert violations == []
