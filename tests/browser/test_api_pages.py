"""The browsable API and the API docs in a real browser, under the site's strict CSP."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Conversation
from tests.browser.helpers import csp_violations, log_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_browsable_api_works_under_the_csp(open_context, daphne_anthropic, user, password):
    """Signed out, an API page links to the site's login, which comes back to it; the API
    root, a list with its filters and a detail page render with DRF's styles and scripts
    and nothing blocked; a conversation is created with the HTML form, renamed with the
    PATCH form, and a stream token minted with a body-less form's button."""
    server = daphne_anthropic.url
    page = open_context().new_page()
    violations = csp_violations(page)

    response = page.goto(f"{server}/api/v1/conversations/")
    assert response.status == 401
    page.get_by_test_id("api-login").click()
    form = page.get_by_test_id("login-form")
    form.locator("input[name=username]").fill(user.username)
    form.locator("input[name=password]").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{server}/api/v1/conversations/")
    expect(page.get_by_test_id("api-logout")).to_be_visible()

    response = page.goto(f"{server}/api/v1/")
    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy
    expect(page.locator(".navbar-brand")).to_have_text("chatsite API")
    link = page.locator(".response-info a", has_text=f"{server}/api/v1/conversations/").first
    link.click()
    page.wait_for_url(f"{server}/api/v1/conversations/")

    # The HTML form (DRF's script shows its tab), posted as a browser form.
    form = page.locator("#post-object-form form")
    expect(form).to_be_visible()
    form.locator("input[name=title]").fill("Made in the browsable API")
    form.locator("button", has_text="POST").click()
    expect(page.locator(".response-info")).to_contain_text("HTTP 201 Created")
    conversation = Conversation.objects.get(owner=user, title="Made in the browsable API")

    # The ids are links; the detail page's PATCH form (sent by DRF's script) renames it.
    page.locator(".response-info a", has_text=f"/conversations/{conversation.pk}/").first.click()
    page.wait_for_url(f"{server}/api/v1/conversations/{conversation.pk}/")
    patch = page.get_by_test_id("patch-form")
    expect(patch.locator("input[name=title]")).to_have_value("Made in the browsable API")
    patch.locator("input[name=title]").fill("Renamed in the browsable API")
    patch.locator("button", has_text="PATCH").click()
    expect(page.locator(".response-info")).to_contain_text("HTTP 200 OK")
    expect(page.locator(".response-info")).to_contain_text("Renamed in the browsable API")
    conversation.refresh_from_db()
    assert conversation.title == "Renamed in the browsable API"

    # A list with a filter: its button floats right by our stylesheet, not an inline style.
    page.goto(f"{server}/api/v1/conversations/{conversation.pk}/messages/")
    filters = page.locator("button[data-target='#filtersModal']")
    expect(filters).to_be_visible()
    assert filters.evaluate("(el) => getComputedStyle(el).float") == "right"
    expect(page.locator("#post-object-form textarea[name=content]")).to_be_visible()

    # A POST without a body is one button.
    page.goto(f"{server}/api/v1/conversations/{conversation.pk}/stream-token/")
    form = page.locator("#post-object-form form")
    expect(form).to_contain_text("takes no body")
    form.locator("button", has_text="POST").click()
    expect(page.locator(".response-info")).to_contain_text("HTTP 201 Created")
    expect(page.locator(".response-info")).to_contain_text("stream_url")

    page.wait_for_timeout(100)
    assert violations == []


def test_api_docs_show_the_stream_under_the_csp(open_context, daphne_anthropic, user, password):
    """/api/v1/docs/ lists the API root and the event stream with the rest, nothing blocked."""
    page = log_in(open_context(), daphne_anthropic, user, password)
    violations = csp_violations(page)
    page.goto(f"{daphne_anthropic.url}/api/v1/docs/")
    stream = page.locator(".opblock-summary", has_text="/stream/conversations/")
    expect(stream.first).to_be_visible()
    stream.first.click()
    expect(page.locator(".opblock-body").first).to_contain_text("text/event-stream")
    page.wait_for_timeout(100)
    assert violations == []
