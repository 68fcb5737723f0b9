"""The message admin in a real browser: every row is one line, trouble stands out, and its
stylesheet (a static file) applies under the CSP."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message

from .helpers import csp_violations

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-root-1"


def test_message_rows_stay_one_line_and_failed_answers_stand_out(
    open_context, daphne_anthropic, django_user_model
):
    """A hyphenated model id, a long title and a long multi-line answer do not wrap their
    cells: every cell of every row is one line tall. A failed answer's status is in the
    admin's error colour with a mark; a complete one's is not."""
    admin = django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    conversation = Conversation.objects.create(
        owner=admin, title="A long title about several things at once", model="claude-sonnet-4-5"
    )
    Message.objects.create(conversation=conversation, role="user", content="Why?\n\n" * 50)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="failed",
        error_code="upstream_overloaded",
        input_tokens=12,
    )
    page = open_context(viewport={"width": 1920, "height": 900}).new_page()
    violations = csp_violations(page)
    page.goto(f"{daphne_anthropic.url}/admin/login/?next=/admin/chat/message/")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)

    heights = page.evaluate(
        """() => [...document.querySelectorAll('#result_list tbody tr')].map(row => ({
            row: row.getBoundingClientRect().height,
            line: parseFloat(getComputedStyle(row.querySelector('td')).lineHeight),
        }))"""
    )
    for h in heights:
        assert h["row"] < 2 * h["line"] + 16, heights  # one line plus the cell padding

    failed = page.locator(".chat-status-failed")
    complete = page.locator(".chat-status-complete")
    style = "e => [getComputedStyle(e).color, getComputedStyle(e, '::before').content]"
    failed_color, failed_mark = failed.evaluate(style)
    complete_color, complete_mark = complete.evaluate(style)
    assert failed_color != complete_color
    assert "\u26a0" in failed_mark and complete_mark in ("none", "normal")
    assert violations == []


def test_live_runs_page_works_under_the_csp_in_light_and_dark(
    open_context, daphne_anthropic, django_user_model
):
    """The live-runs page loads its script and stylesheet under the CSP in both colour
    schemes; a lapsed lease stands out; it reloads itself, but not while a row is ticked;
    and "Force stop" from the page flags the run.

    The run's lease is live: earlier tests' two-process clusters share this database and
    sweep it, and they would end a run whose lease had lapsed before the page showed it.
    So the lapsed lease's look is checked on a cell made like the page makes it (its HTML
    is tests/chat/test_opsadmin.py's business)."""
    from datetime import timedelta

    from django.utils import timezone

    admin = django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    conversation = Conversation.objects.create(owner=admin, title="Live one", model="m")
    now = timezone.now()
    run = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content="So far",
        created_at=now - timedelta(seconds=20),
        first_token_at=now - timedelta(seconds=19),
        run_owner="specific.web-1.4321.0123456789abcdef",
        run_lease_expires_at=now + timedelta(hours=1),
    )
    for scheme in ("light", "dark"):
        page = open_context(color_scheme=scheme).new_page()
        violations = csp_violations(page)
        page.goto(f"{daphne_anthropic.url}/admin/login/?next=/admin/chat/liverun/")
        page.fill("input[name=username]", admin.username)
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit]")
        row = page.locator("#result_list tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("web-1 · pid 4321")
        expect(row).to_contain_text("6 chars")
        lease = page.locator(".field-lease")
        expect(lease).to_be_visible()
        colors = lease.evaluate(
            "td => { const s = document.createElement('span');"
            " s.className = 'chat-status-trouble'; s.textContent = 'lapsed 5 seconds ago';"
            " td.append(s); const c = [getComputedStyle(s).color, getComputedStyle(td).color];"
            " s.remove(); return c; }"
        )
        assert colors[0] != colors[1], colors
        assert violations == []

    # It reloads itself (a page's own variable is gone after a reload)...
    page.evaluate("window.__loaded = true")
    page.wait_for_function("() => window.__loaded === undefined", timeout=12_000)
    # ...but not while a run is ticked for an action.
    page.locator("input.action-select").check()
    page.evaluate("window.__loaded = true")
    page.wait_for_timeout(7_000)
    assert page.evaluate("window.__loaded") is True
    page.select_option("select[name=action]", "force_stop")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Asked 1 run to stop")
    run.refresh_from_db()
    assert run.cancel_requested
    assert violations == []
