"""The JavaScript API example (docs/examples/js/) in Chromium against a real server.

chatsite sends no CORS headers, so the example must run on the site's origin. Playwright
serves its three files at `/examples/js/` on that origin (a path the site does not have:
the routes answer before the request leaves the browser) with the CSP header the site
sends on its own pages; everything else — the API calls and the event stream — goes to
the real server through a proxy that can cut the connections, as a network would.
Nothing is added to the site for the example, and its strict CSP is not bypassed.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from chat.models import Message
from tests.conftest import ROOT
from tests.e2e.client import wait_for_final

from .helpers import csp_violations

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLE = ROOT / "docs" / "examples" / "js"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript"}


@pytest.fixture(scope="module")
def daphne_short_token_demo(start_daphne):
    """The demo model at 15 tokens/s (about 10 s an answer) with stream tokens that expire
    after 2 seconds, and reconnects retried after 0.5 s."""
    return start_daphne(
        ANTHROPIC_API_KEY="",
        CHAT_DEMO_TOKENS_PER_SECOND="15",
        CHAT_STREAM_TOKEN_LIFETIME_SECONDS="2",
        CHAT_SSE_RETRY_MS="500",
    )


@pytest.fixture(scope="module")
def daphne_paced_demo(start_daphne):
    """The demo model at 40 tokens/s (an answer streams for about 4 s), so a drop and a
    stop land mid-answer; reconnects are retried after 0.5 s."""
    return start_daphne(
        ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="40", CHAT_SSE_RETRY_MS="500"
    )


def open_example(page: Page, origin: str, site_url: str) -> None:
    """Serve docs/examples/js/ at `origin`/examples/js/ under the site's own CSP."""
    csp = httpx.get(f"{site_url}/accounts/login/").headers["content-security-policy"]

    def serve(route):
        name = route.request.url.split("/examples/js/", 1)[1].split("?")[0]
        path = EXAMPLE / name
        if not path.is_file():
            route.fulfill(status=404, body="")
            return
        route.fulfill(
            status=200,
            body=path.read_bytes(),
            headers={
                "Content-Type": CONTENT_TYPES[path.suffix],
                "Content-Security-Policy": csp,
            },
        )

    page.route(re.compile(re.escape(origin) + r"/examples/js/.*"), serve)
    page.goto(f"{origin}/examples/js/index.html")


def log_in(page: Page, user, password) -> Locator:
    """Fill the example's login form; returns its log once the stream is open."""
    page.fill("#login input[name=username]", user.username)
    page.fill("#login input[name=password]", password)
    page.click("#login button[type=submit]")
    log = page.locator("#log")
    expect(log).to_contain_text("stream open")
    return log


def answer_text(page: Page, min_chars: int) -> str:
    page.wait_for_function(
        "n => document.querySelector('#answer').textContent.length >= n", arg=min_chars
    )
    return page.locator("#answer").text_content()


def test_the_js_example_streams_resumes_after_a_drop_and_stops(
    open_context, daphne_paced_demo, droppable_proxy, user, password
):
    """Log in (JWT), open the stream, send; mid-answer every connection is cut: the
    browser's EventSource reconnects by itself with `Last-Event-ID` and the page ends with
    exactly the stored answer. A second answer is stopped: `cancelled`, with exactly the
    stored partial text. No CSP violation, no script error."""
    proxy = droppable_proxy(daphne_paced_demo.url)
    page = open_context().new_page()
    violations = csp_violations(page)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    streams = []  # the browser's requests for the event stream
    page.on("request", lambda r: streams.append(r) if "/stream/conversations/" in r.url else None)
    open_example(page, proxy.url, daphne_paced_demo.url)
    log = log_in(page, user, password)

    page.click("#composer button[type=submit]")
    before_drop = answer_text(page, 40)
    assert page.locator("#answer-status").get_attribute("data-status") == "streaming"
    assert proxy.drop_connections() > 0
    expect(page.locator("#answer-status")).to_have_attribute("data-status", "complete")

    first_id = page.locator("#answer").get_attribute("data-message-id")
    stored = wait_for_final(first_id)
    shown = page.locator("#answer").text_content()
    assert shown == stored.content and stored.status == "complete"  # no gap, no repeat
    assert shown.startswith(before_drop) and len(before_drop) < len(shown)
    # The browser itself reconnected — the same URL, no position in the query — and the
    # server resumed it: a connection without Last-Event-ID would have been sent
    # `message_start` again, and the whole text so far.
    urls = [r.url for r in streams]
    assert len(urls) == 2 and urls[0] == urls[1] and "last_event_id" not in urls[1], urls
    assert log.text_content().count(f"message_start {first_id}") == 1
    resumed_at = re.search(rf"reconnected with Last-Event-ID {first_id}:(\d+)", log.text_content())
    assert resumed_at and len(before_drop) <= int(resumed_at[1]) < len(shown)

    page.fill("#composer input[name=content]", "Now tell me a long story, please.")
    page.click("#composer button[type=submit]")
    expect(page.locator("#answer")).not_to_have_attribute("data-message-id", first_id)
    answer_text(page, 40)
    page.click("#stop")
    expect(page.locator("#answer-status")).to_have_attribute("data-status", "cancelled")
    expect(log).to_contain_text("stop: the answer is cancelled")
    second_id = page.locator("#answer").get_attribute("data-message-id")
    stopped = Message.objects.get(pk=second_id)
    assert stopped.status == "cancelled"
    assert page.locator("#answer").text_content() == stopped.content
    assert len(stopped.content) < len(stored.content)

    assert violations == [] and errors == []


def test_the_js_example_resumes_with_a_new_token_once_its_token_expired(
    open_context, daphne_short_token_demo, droppable_proxy, user, password
):
    """Stream tokens live 2 s. The connection drops after the page's token expired: the
    browser's own reconnect is refused (401) and EventSource gives up; the client mints a
    new token and opens a new stream with `?last_event_id=`. The page ends with exactly the
    stored answer."""
    proxy = droppable_proxy(daphne_short_token_demo.url)
    page = open_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    streams: list[tuple[int, str]] = []
    page.on(
        "response",
        lambda r: streams.append((r.status, r.url)) if "/stream/conversations/" in r.url else None,
    )
    open_example(page, proxy.url, daphne_short_token_demo.url)
    log = log_in(page, user, password)
    token_minted = time.monotonic()  # just before the stream opened

    page.click("#composer button[type=submit]")
    before_drop = answer_text(page, 20)
    page.wait_for_timeout(max(0.0, 2.5 - (time.monotonic() - token_minted)) * 1000)
    assert page.locator("#answer-status").get_attribute("data-status") == "streaming"
    assert proxy.drop_connections() > 0
    expect(page.locator("#answer-status")).to_have_attribute(
        "data-status", "complete", timeout=30_000
    )

    answer_id = page.locator("#answer").get_attribute("data-message-id")
    stored = wait_for_final(answer_id)
    assert page.locator("#answer").text_content() == stored.content
    assert stored.content.startswith(before_drop)
    statuses = [status for status, _ in streams]
    assert statuses == [200, 401, 200], streams
    assert streams[1][1] == streams[0][1]  # the browser's own reconnect, with the old token
    assert f"last_event_id={answer_id}%3A" in streams[2][1], streams
    assert log.text_content().count(f"message_start {answer_id}") == 1
    assert errors == []
