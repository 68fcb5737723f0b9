"""The sidebar in a real browser: searching conversations (Ctrl/Cmd+K), the list's further
pages loaded on scroll, pinning and archiving from a row's menu, in light and dark, on a
desktop and a phone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.api.pagination import ConversationPagination
from chat.models import Conversation, Message
from tests.browser.helpers import log_in, send_with_enter, wait_until_idle

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = ConversationPagination.page_size
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
ROWS = '[data-testid="conversation-list"] [data-testid="conversation-row"]'


def make(owner, title: str, *messages: str, minutes_ago: int = 0) -> Conversation:
    """A conversation with `messages` (a question and an answer, alternately; at least one
    question: the sidebar lists conversations with a message)."""
    conversation = Conversation.objects.create(owner=owner, title=title, model="demo")
    for number, content in enumerate(messages or ["Hello"]):
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER if number % 2 == 0 else Message.Role.ASSISTANT,
            content=content,
        )
    Conversation.objects.filter(pk=conversation.pk).update(
        updated_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    return conversation


def row(page: Page, conversation: Conversation, view: str = "conversation-list"):
    return page.locator(
        f'[data-testid="{view}"] [data-testid="conversation-row"][data-id="{conversation.pk}"]'
    )


def scroll_to_end(page: Page) -> None:
    page.get_by_test_id("conversation-list").evaluate("(list) => list.scrollTo(0, 1e6)")


def open_menu(page: Page, conversation: Conversation, view: str = "conversation-list"):
    target = row(page, conversation, view)
    target.hover()
    target.get_by_test_id("conversation-menu-button").click()
    menu = target.get_by_test_id("conversation-menu")
    expect(menu).to_be_visible()
    return menu


def test_ctrl_k_focuses_search_and_a_query_finds_a_conversation_by_message_text(
    open_context, daphne_demo, user, password
):
    """Ctrl+K puts the cursor in the search box; a word from an answer finds its
    conversation (with the text around it) and nothing else; ArrowDown and Enter open it;
    Escape clears the search and brings the list back."""
    wanted = make(
        user,
        "Weekend plans",
        "Where should we walk?",
        "The ridge above Glenridding has the best views of the lake.",
        minutes_ago=30,
    )
    for number in range(3):
        make(user, f"Other {number}", "Nothing relevant", "Nothing at all")
    page = log_in(open_context(), daphne_demo, user, password)

    page.keyboard.press("Control+k")
    search = page.get_by_test_id("conversation-search")
    expect(search).to_be_focused()
    search.press_sequentially("glenridding", delay=20)

    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-conversation-id", str(wanted.pk))
    expect(results.first.get_by_test_id("search-snippet")).to_contain_text("Glenridding")
    expect(results.first.locator("mark").first).to_have_text("Glenridding")
    expect(page.get_by_test_id("conversation-list")).to_be_hidden()
    expect(page.get_by_test_id("search-status")).to_have_text("1 conversation")

    search.press("Escape")
    expect(search).to_have_value("")
    expect(page.get_by_test_id("search-results")).to_be_hidden()
    expect(page.locator(ROWS)).to_have_count(4)

    search.fill("glenridding")
    expect(results).to_have_count(1)
    search.press("ArrowDown")
    expect(results.first).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/c/{wanted.pk}/")
    wait_until_idle(page)


def test_only_the_latest_query_is_shown(open_context, daphne_demo, user, password):
    """Typing on replaces the results: what shows is always for what the box holds."""
    make(user, "Apples", "I like apples")
    make(user, "Pears", "I like pears")
    page = log_in(open_context(), daphne_demo, user, password)
    search = page.get_by_test_id("conversation-search")

    search.fill("apples")
    search.fill("pears")

    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("Pears")
    page.wait_for_timeout(600)  # any answer for "apples" would have arrived by now
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("Pears")


def test_enter_opens_the_best_result_for_what_the_box_holds(
    open_context, daphne_demo, user, password
):
    """Enter pressed before the results for the latest keys arrived opens the best result
    for what the box holds, not for what it held before."""
    make(user, "Apples", "I like apples")
    pears = make(user, "Pears", "I like pears")
    page = log_in(open_context(), daphne_demo, user, password)
    search = page.get_by_test_id("conversation-search")
    search.fill("apples")
    expect(page.get_by_test_id("search-result")).to_contain_text("Apples")

    search.fill("pears")
    search.press("Enter")

    page.wait_for_url(f"**/c/{pears.pk}/")


def test_more_results_than_a_page_are_a_click_away(open_context, daphne_demo, user, password):
    """Results come a page at a time; "More results" adds the next page."""
    for n in range(PAGE + 4):
        make(user, f"Report {n:03d}", minutes_ago=n)
    page = log_in(open_context(), daphne_demo, user, password)
    page.get_by_test_id("conversation-search").fill("report")
    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(PAGE)
    expect(page.get_by_test_id("search-status")).to_have_text(f"{PAGE + 4} conversations")

    page.get_by_test_id("search-more").click()

    expect(results).to_have_count(PAGE + 4)
    expect(page.get_by_test_id("search-more")).to_be_hidden()
    ids = results.evaluate_all("(links) => links.map((link) => link.dataset.conversationId)")
    assert len(set(ids)) == PAGE + 4


def test_the_list_loads_its_next_page_when_scrolled_to_the_end(
    open_context, daphne_demo, user, password
):
    """The page renders one API page of rows; scrolling to the end loads the rest, each
    conversation once, in order."""
    conversations = [make(user, f"Chat {n:03d}", minutes_ago=n) for n in range(PAGE + 7)]
    page = log_in(open_context(), daphne_demo, user, password)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(PAGE)

    scroll_to_end(page)

    expect(rows).to_have_count(PAGE + 7)
    ids = rows.evaluate_all("(rows) => rows.map((row) => row.dataset.id)")
    assert ids == [str(c.pk) for c in conversations]
    expect(page.get_by_test_id("conversation-list-more")).to_be_hidden()


def test_a_failed_page_says_so_and_try_again_loads_it(open_context, daphne_demo, user, password):
    """When the next page cannot be loaded the list says so, and "Try again" loads it."""
    for n in range(PAGE + 2):
        make(user, f"Chat {n:03d}", minutes_ago=n)
    page = log_in(open_context(), daphne_demo, user, password)
    failing = "**/api/v1/conversations/?page=2"
    page.route(failing, lambda route: route.fulfill(status=503, body="{}"))

    scroll_to_end(page)

    more = page.get_by_test_id("conversation-list-more")
    expect(more).to_contain_text("Couldn't load more conversations.")
    page.unroute(failing)
    more.get_by_role("button", name="Try again").click()
    expect(page.locator(ROWS)).to_have_count(PAGE + 2)
    expect(more).to_be_hidden()


def test_the_current_conversation_is_highlighted_beyond_the_first_page(
    open_context, daphne_demo, user, password
):
    """An old conversation is listed and highlighted when opened, and takes its place in
    the list (once) when its page loads."""
    conversations = [make(user, f"Chat {n:03d}", minutes_ago=n) for n in range(PAGE + 3)]
    old = conversations[-2]
    page = log_in(open_context(), daphne_demo, user, password)
    page.goto(f"{daphne_demo.url}/c/{old.pk}/")
    wait_until_idle(page)
    current = row(page, old)
    expect(current).to_have_class("conversation-row is-active")
    expect(current.get_by_test_id("conversation-link")).to_have_attribute("aria-current", "page")

    scroll_to_end(page)

    rows = page.locator(ROWS)
    expect(rows).to_have_count(PAGE + 3)
    ids = rows.evaluate_all("(rows) => rows.map((row) => row.dataset.id)")
    assert ids == [str(c.pk) for c in conversations]


def test_pinning_moves_a_row_to_pinned(open_context, daphne_demo, user, password):
    """Pin (from the row's menu) moves the row under "Pinned", at once and after a reload;
    Unpin moves it back."""
    older = make(user, "Older", minutes_ago=10)
    make(user, "Newer", minutes_ago=1)
    page = log_in(open_context(), daphne_demo, user, password)
    pinned_group = page.get_by_test_id("pinned-group")
    expect(pinned_group).to_be_hidden()

    open_menu(page, older).get_by_test_id("menu-pin").click()

    expect(pinned_group.get_by_test_id("conversation-row")).to_have_count(1)
    expect(row(page, older)).to_have_attribute("data-pinned", "true")
    expect(pinned_group).to_be_visible()
    expect(page.get_by_test_id("sidebar-announce")).to_have_text("Pinned “Older”.")
    page.reload()
    expect(pinned_group.get_by_test_id("conversation-row")).to_have_count(1)
    expect(row(page, older)).to_have_attribute("data-pinned", "true")

    menu = open_menu(page, older)
    expect(menu.get_by_test_id("menu-pin")).to_have_text("Unpin")
    menu.get_by_test_id("menu-pin").click()
    expect(pinned_group).to_be_hidden()
    recent = page.get_by_test_id("recent-group").get_by_test_id("conversation-row")
    expect(recent).to_have_count(2)
    assert Conversation.objects.get(pk=older.pk).pinned is False


def test_archiving_hides_a_row_and_it_appears_in_archived(
    open_context, daphne_demo, user, password
):
    """Archiving the conversation being read keeps the reader on it and takes it out of the
    list; "Archived" lists it, and Unarchive puts it back."""
    kept = make(user, "Kept", minutes_ago=5)
    current = make(user, "Done with this", minutes_ago=1)
    page = log_in(open_context(), daphne_demo, user, password)
    page.goto(f"{daphne_demo.url}/c/{current.pk}/")
    wait_until_idle(page)

    open_menu(page, current).get_by_test_id("menu-archive").click()

    expect(row(page, current)).to_have_count(0)
    expect(row(page, kept)).to_have_count(1)
    assert page.url.endswith(f"/c/{current.pk}/")
    assert Conversation.objects.get(pk=current.pk).archived is True

    page.get_by_test_id("archived-toggle").click()
    expect(page.get_by_test_id("conversation-list")).to_be_hidden()
    archived = page.get_by_test_id("archived-view")
    expect(archived.get_by_test_id("conversation-row")).to_have_count(1)
    expect(row(page, current, "archived-view")).to_be_visible()

    menu = open_menu(page, current, "archived-view")
    expect(menu.get_by_test_id("menu-archive")).to_have_text("Unarchive")
    menu.get_by_test_id("menu-archive").click()
    expect(archived.get_by_test_id("conversation-row")).to_have_count(0)
    expect(page.get_by_test_id("archived-empty")).to_be_visible()
    page.get_by_test_id("archived-toggle").click()
    expect(row(page, current)).to_be_visible()
    assert Conversation.objects.get(pk=current.pk).archived is False


def test_a_sent_message_moves_the_row_to_the_top_of_its_group(
    open_context, daphne_demo, user, password
):
    """Sending in an older conversation moves its row to the top of "Recent"; a pinned
    conversation's row stays under "Pinned", at its top."""
    older = make(user, "Older", minutes_ago=30)
    make(user, "Newer", minutes_ago=1)
    pinned = [make(user, f"Pinned {n}", minutes_ago=10 + n) for n in range(2)]
    Conversation.objects.filter(pk__in=[c.pk for c in pinned]).update(pinned=True)
    page = log_in(open_context(), daphne_demo, user, password)
    recent = page.get_by_test_id("recent-group").get_by_test_id("conversation-row")
    pinned_rows = page.get_by_test_id("pinned-group").get_by_test_id("conversation-row")

    for conversation, rows in ((older, recent), (pinned[1], pinned_rows)):
        page.goto(f"{daphne_demo.url}/c/{conversation.pk}/")
        wait_until_idle(page)
        send_with_enter(page, "Hello again")
        expect(rows.first).to_have_attribute("data-id", str(conversation.pk))
        expect(rows).to_have_count(2)


def test_a_message_in_an_archived_conversation_leaves_it_archived(
    open_context, daphne_demo, user, password
):
    """Sending in an archived conversation (its row shown under "Archived") does not move
    its row into the list: it is still archived."""
    archived = make(user, "Archived one")
    Conversation.objects.filter(pk=archived.pk).update(archived=True)
    make(user, "Listed one")
    page = log_in(open_context(), daphne_demo, user, password)
    page.goto(f"{daphne_demo.url}/c/{archived.pk}/")
    wait_until_idle(page)
    page.get_by_test_id("archived-toggle").click()
    expect(row(page, archived, "archived-view")).to_be_visible()

    send_with_enter(page, "Still here?")

    expect(row(page, archived, "archived-view")).to_have_count(1)
    expect(row(page, archived)).to_have_count(0)
    assert Conversation.objects.get(pk=archived.pk).archived is True


def test_the_row_menu_works_from_the_keyboard(open_context, daphne_demo, user, password):
    """Tab reaches a row's menu button; Enter opens the menu on its first item, arrows move,
    Escape closes it and gives focus back to the button."""
    conversation = make(user, "Keyboard")
    page = log_in(open_context(), daphne_demo, user, password)
    button = row(page, conversation).get_by_test_id("conversation-menu-button")
    button.focus()
    expect(button).to_be_visible()

    page.keyboard.press("Enter")
    menu = page.get_by_test_id("conversation-menu")
    expect(menu.get_by_test_id("menu-pin")).to_be_focused()
    expect(button).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowDown")
    expect(menu.get_by_test_id("menu-archive")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()
    expect(button).to_have_attribute("aria-expanded", "false")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_search_box_and_row_menu_show_in_every_theme_and_size(
    open_context, daphne_demo, user, password, scheme, device, tmp_path
):
    """In light and dark, on a desktop and a phone: Ctrl+K shows and focuses the search box
    (opening the drawer on a phone), results show, a row's menu opens in view, and pinning
    and archiving from it work."""
    conversation = make(user, "Lighthouse keeping", "How often is the lamp cleaned?", "Daily.")
    options = {"color_scheme": scheme, **(PHONE if device == "phone" else {})}
    page = log_in(open_context(**options), daphne_demo, user, password)
    search = page.get_by_test_id("conversation-search")
    if device == "phone":
        expect(search).not_to_be_in_viewport()

    page.keyboard.press("Control+k")

    expect(search).to_be_focused()
    expect(search).to_be_in_viewport()
    search.fill("lamp")
    expect(page.get_by_test_id("search-result")).to_have_count(1)
    expect(page.get_by_test_id("search-snippet")).to_be_in_viewport()
    page.screenshot(path=tmp_path / f"search-{device}-{scheme}.png")
    search.press("Escape")

    menu = open_menu(page, conversation)
    expect(menu).to_be_in_viewport()
    expect(menu.get_by_test_id("menu-pin")).to_be_visible()
    expect(menu.get_by_test_id("menu-archive")).to_be_visible()
    page.screenshot(path=tmp_path / f"menu-{device}-{scheme}.png")
    colours = page.evaluate(
        """() => [getComputedStyle(document.querySelector('[data-testid="conversation-menu"]'))
            .backgroundColor, getComputedStyle(document.body).color]"""
    )
    assert colours[0] != colours[1]  # the menu is readable (not text-coloured) in both themes

    menu.get_by_test_id("menu-pin").click()
    expect(page.get_by_test_id("pinned-group")).to_be_in_viewport()
    open_menu(page, conversation).get_by_test_id("menu-archive").click()
    expect(row(page, conversation)).to_have_count(0)
    page.get_by_test_id("archived-toggle").click()
    expect(row(page, conversation, "archived-view")).to_be_in_viewport()
