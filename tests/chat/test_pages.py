"""The server-rendered chat pages: access, history, escaping and the hooks the page script uses."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import resolve, reverse
from django.utils import timezone

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


class _Elements(HTMLParser):
    """Collects start tags; what sits inside <template> is kept apart (it is not rendered)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None], bool]] = []
        self.template_depth = 0

    def handle_starttag(self, tag, attrs) -> None:
        self.found.append((tag, dict(attrs), self.template_depth > 0))
        if tag == "template":
            self.template_depth += 1

    def handle_startendtag(self, tag, attrs) -> None:
        self.found.append((tag, dict(attrs), self.template_depth > 0))

    def handle_endtag(self, tag) -> None:
        if tag == "template":
            self.template_depth -= 1


def elements(
    html: str, tag: str | None = None, *, in_template: bool = False, **attrs: str | bool
) -> list[dict[str, str | None]]:
    """Attributes of the start tags matching `tag` and `attrs` (True: attribute present)."""
    parser = _Elements()
    parser.feed(html)
    wanted = {name.replace("_", "-"): value for name, value in attrs.items()}

    def matches(found: dict[str, str | None]) -> bool:
        return all(
            (key in found) if value is True else found.get(key) == value
            for key, value in wanted.items()
        )

    return [
        found
        for name, found, templated in parser.found
        if (tag is None or name == tag) and templated == in_template and matches(found)
    ]


def by_testid(html: str, value: str) -> list[dict[str, str | None]]:
    return elements(html, data_testid=value)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="unused-pw-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="unused-pw-2")


def make_conversation(owner, *, title: str = "", updated_ago: timedelta | None = None):
    conversation = Conversation.objects.create(owner=owner, title=title, model="test-model")
    if updated_ago is not None:
        # `updated_at` is auto_now: set it with an update() so save() does not overwrite it.
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=timezone.now() - updated_ago
        )
    return conversation


def add_message(conversation, *, role: str, content: str, status: str = "complete", **fields):
    if role == "user" and "parent" not in fields:
        # A linear history: a user message follows the answer sent last before it.
        fields["parent"] = (
            conversation.messages.filter(
                role="assistant", created_at__lt=fields.get("created_at", timezone.now())
            )
            .order_by("-created_at")
            .first()
        )
    return Message.objects.create(
        conversation=conversation, role=role, content=content, status=status, **fields
    )


def page_url(conversation) -> str:
    return reverse("chat:conversation", kwargs={"conversation_id": conversation.pk})


# --- access -------------------------------------------------------------------------


def test_home_sends_anonymous_users_to_login(client):
    """Anonymous users are sent to the login page, coming back to home afterwards."""
    response = client.get(reverse("chat:home"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_conversation_page_sends_anonymous_users_to_login(client, alice):
    """Anonymous users asking for a conversation are sent to the login page."""
    conversation = make_conversation(alice)

    response = client.get(page_url(conversation))

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_someone_elses_conversation_is_404(client, alice, bob):
    """Another user's conversation is a 404, and none of its text leaks."""
    conversation = make_conversation(bob, title="Bob's secrets")
    add_message(conversation, role="user", content="bob's private question")
    client.force_login(alice)

    response = client.get(page_url(conversation))

    assert response.status_code == 404
    assert b"private question" not in response.content


def test_missing_conversation_is_404(client, alice):
    """A conversation id that does not exist is a 404."""
    client.force_login(alice)

    response = client.get(reverse("chat:conversation", kwargs={"conversation_id": uuid.uuid4()}))

    assert response.status_code == 404


# --- home ---------------------------------------------------------------------------


def test_home_shows_empty_state_with_new_conversation_action(client, alice):
    """With no conversations, home shows an empty state offering a new conversation."""
    client.force_login(alice)

    response = client.get(reverse("chat:home"))

    html = response.content.decode()
    assert response.status_code == 200
    assert by_testid(html, "empty-state")
    assert by_testid(html, "conversation-list-empty")
    assert by_testid(html, "new-conversation")
    assert by_testid(html, "empty-state-new-conversation")
    assert "New conversation" in html


def test_home_lists_own_conversations_most_recent_first(client, alice, bob):
    """The sidebar lists only the user's own conversations, most recently updated first."""
    old = make_conversation(alice, title="Old topic", updated_ago=timedelta(days=2))
    new = make_conversation(alice, title="New topic", updated_ago=timedelta(minutes=1))
    bobs = make_conversation(bob, title="Bob topic")
    for conversation in (old, new, bobs):
        add_message(conversation, role="user", content="Hello")
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    links = by_testid(html, "conversation-link")
    assert [link["data-conversation-id"] for link in links] == [str(new.pk), str(old.pk)]
    assert [link["href"] for link in links] == [page_url(new), page_url(old)]
    assert "Bob topic" not in html
    assert not by_testid(html, "conversation-list-empty")


def test_untitled_conversation_is_labelled_by_its_first_question(client, alice):
    """An untitled conversation shows its first question in the sidebar."""
    conversation = make_conversation(alice)
    add_message(conversation, role="user", content="How do tides work?")
    add_message(conversation, role="assistant", content="The moon pulls on the oceans.")
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert "How do tides work?" in html
    assert "Untitled conversation" not in html


def test_sidebar_leaves_out_conversations_without_messages(client, alice):
    """An empty conversation (made through the API, or by an older page for every click
    on "New conversation") is not listed until it has a message; the API lists it."""
    chatted = make_conversation(alice, title="Chatted")
    add_message(chatted, role="user", content="Hi")
    make_conversation(alice, title="Empty one")
    make_conversation(alice)
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    links = by_testid(html, "conversation-link")
    assert [link["data-conversation-id"] for link in links] == [str(chatted.pk)]
    assert "Untitled conversation" not in html
    assert client.get(reverse("conversation-list")).json()["count"] == 3


def test_an_empty_conversation_is_listed_while_it_is_open(client, alice):
    """The open conversation is in the sidebar even before its first message; other empty
    ones are not."""
    empty = make_conversation(alice, title="Just made")
    make_conversation(alice, title="Another empty")
    client.force_login(alice)

    html = client.get(page_url(empty)).content.decode()

    links = by_testid(html, "conversation-link")
    assert [link["data-conversation-id"] for link in links] == [str(empty.pk)]
    assert links[0]["aria-current"] == "page"


def test_home_rejects_post(client, alice):
    """The page views only read: POST is not allowed."""
    client.force_login(alice)

    response = client.post(reverse("chat:home"))

    assert response.status_code == 405


# --- conversation page --------------------------------------------------------------


def test_conversation_page_renders_history_in_order(client, alice):
    """A short history is rendered whole on the server, oldest first, with role and status,
    and nothing is left for the script to load."""
    conversation = make_conversation(alice, title="Geography")
    now = timezone.now()
    first = add_message(conversation, role="user", content="Capital of France?", created_at=now)
    second = add_message(
        conversation,
        role="assistant",
        content="Paris.",
        created_at=now + timedelta(seconds=1),
    )
    third = add_message(
        conversation,
        role="user",
        content="And of Italy?",
        created_at=now + timedelta(seconds=2),
    )
    client.force_login(alice)

    response = client.get(page_url(conversation))

    html = response.content.decode()
    assert response.status_code == 200
    bubbles = by_testid(html, "message")
    assert [b["data-message-id"] for b in bubbles] == [str(m.pk) for m in (first, second, third)]
    assert [b["data-role"] for b in bubbles] == ["user", "assistant", "user"]
    assert [b["data-status"] for b in bubbles] == ["complete"] * 3
    assert html.index("Capital of France?") < html.index("Paris.") < html.index("And of Italy?")
    assert not by_testid(html, "empty-state")
    (root,) = elements(html, data_chat_root=True)
    assert root["data-older-messages-url"] == ""


def test_conversation_page_escapes_html_in_message_content(client, alice):
    """Markup in a message is shown as text, never run: a <script> appears escaped."""
    conversation = make_conversation(alice)
    add_message(conversation, role="user", content='<script>alert("pwned")</script>')
    add_message(conversation, role="assistant", content="<img src=x onerror=alert(1)>")
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html


def test_unfinished_messages_show_their_status(client, alice):
    """Stopped, interrupted and failed answers say so; a failure shows its error message."""
    conversation = make_conversation(alice)
    now = timezone.now()
    add_message(conversation, role="user", content="q1", created_at=now)
    add_message(
        conversation,
        role="assistant",
        content="partial",
        status="cancelled",
        created_at=now + timedelta(seconds=1),
    )
    add_message(
        conversation,
        role="assistant",
        content="cut off",
        status="interrupted",
        created_at=now + timedelta(seconds=2),
    )
    add_message(
        conversation,
        role="assistant",
        content="",
        status="failed",
        error_code="overloaded",
        error_message="The model is overloaded.",
        created_at=now + timedelta(seconds=3),
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert [b["data-status"] for b in by_testid(html, "message")] == [
        "complete",
        "cancelled",
        "interrupted",
        "failed",
    ]
    assert ">stopped</p>" in html
    assert ">interrupted</p>" in html
    assert ">failed: The model is overloaded.</p>" in html


def test_conversation_page_with_answer_in_progress_disables_composer(client, alice):
    """While an answer is streaming the composer starts disabled; the script re-enables it."""
    conversation = make_conversation(alice)
    now = timezone.now()
    add_message(conversation, role="user", content="Tell me a story", created_at=now)
    add_message(
        conversation,
        role="assistant",
        content="Once upon",
        status="streaming",
        created_at=now + timedelta(seconds=1),
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert "disabled" in by_testid(html, "composer-input")[0]
    assert "disabled" in by_testid(html, "send-button")[0]
    assert by_testid(html, "message")[-1]["data-status"] == "streaming"


def test_idle_conversation_page_has_enabled_composer(client, alice):
    """With no answer in progress the composer is enabled."""
    conversation = make_conversation(alice)
    add_message(conversation, role="user", content="hi")
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert "disabled" not in by_testid(html, "composer-input")[0]
    assert "disabled" not in by_testid(html, "send-button")[0]


def test_current_conversation_is_marked_in_sidebar(client, alice):
    """The open conversation is marked as the current page in the sidebar."""
    current = make_conversation(alice, title="Current")
    make_conversation(alice, title="Other")
    client.force_login(alice)

    html = client.get(page_url(current)).content.decode()

    marked = elements(html, "a", aria_current="page")
    assert [link["data-conversation-id"] for link in marked] == [str(current.pk)]


# --- what the page script needs -----------------------------------------------------


def test_page_includes_static_js_and_css(client, alice):
    """Chat pages load the vendored libraries and markdown.js from static files, in that order
    and deferred, then the page script's entry module (deferred too, so it runs after them);
    the highlight.js theme follows the colour scheme."""
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    scripts = elements(html, "script")
    assert [s.get("src") for s in scripts] == [
        "/static/vendor/markdown-it-15.0.3/markdown-it.umd.min.js",
        "/static/vendor/dompurify-3.4.18/purify.min.js",
        "/static/vendor/highlightjs-cdn-assets-11.12.0/highlight.min.js",
        "/static/chat/markdown.js",
        "/static/chat/main.js",
    ]
    assert all("defer" in script for script in scripts[:-1])
    assert scripts[-1].get("type") == "module"
    assert elements(html, "link", rel="stylesheet", href="/static/chat/chat.css")
    themes = {
        link["media"]: link["href"]
        for link in elements(html, "link", rel="stylesheet")
        if "highlightjs" in link["href"]
    }
    theme = "/static/vendor/highlightjs-cdn-assets-11.12.0/github{}.min.css"
    assert themes == {
        "(prefers-color-scheme: light)": theme.format(""),
        "(prefers-color-scheme: dark)": theme.format("-dark"),
    }


PAGE_SCRIPT = Path(__file__).resolve().parents[2] / "static" / "chat"
MODULE_IMPORT = re.compile(r'^import \{[^}]*\} from "\./([\w-]+\.js)";$', re.MULTILINE)


def test_page_script_modules_import_existing_files_without_cycles():
    """main.js imports the page script's modules by relative path (no build step resolves
    them): every import names a file in static/chat/, and no module imports, directly or
    through others, one that imports it back (modules hand callbacks down instead)."""
    graph = {}
    pending = ["main.js"]
    while pending:
        name = pending.pop()
        if name in graph:
            continue
        source = (PAGE_SCRIPT / name).read_text()
        graph[name] = MODULE_IMPORT.findall(source)
        statements = re.findall(r"^import\b", source, re.MULTILINE)
        assert len(statements) == len(graph[name]), f"{name}: an import the test cannot read"
        for target in graph[name]:
            assert (PAGE_SCRIPT / target).is_file(), f"{name} imports missing {target}"
            pending.append(target)
    assert set(graph) == {
        "main.js", "page.js", "api.js", "stream.js", "messages.js",
        "composer.js", "sidebar.js", "dialogs.js", "shortcuts.js", "menus.js", "times.js",
        "branches.js", "edit.js",
        "conversation-list.js", "search.js",
    }  # fmt: skip

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(
            t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph[start]
        )

    cycles = [name for name in graph if reaches(name, name)]
    assert cycles == []


def test_conversation_page_exposes_data_the_script_needs(client, alice):
    """The root element carries the conversation id and API URLs that resolve to the API."""
    conversation = make_conversation(alice)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    (root,) = elements(html, data_chat_root=True)
    assert root["data-page"] == "conversation"
    assert root["data-conversation-id"] == str(conversation.pk)
    assert resolve(root["data-conversations-url"]).url_name == "conversation-list"
    messages = resolve(root["data-messages-url"])
    assert messages.url_name == "message-list"
    assert messages.kwargs == {"conversation_id": conversation.pk}
    token = resolve(root["data-stream-token-url"])
    assert token.url_name == "stream-token"
    assert token.kwargs == {"conversation_id": conversation.pk}
    placeholder = root["data-placeholder-id"]
    assert root["data-cancel-url-template"] == f"/api/v1/messages/{placeholder}/cancel/"
    assert root["data-conversation-url-template"].replace(placeholder, str(conversation.pk)) == (
        page_url(conversation)
    )


def test_home_exposes_data_the_script_needs(client, alice):
    """On home the root element has no conversation but can create one."""
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    (root,) = elements(html, data_chat_root=True)
    assert root["data-page"] == "home"
    assert root["data-conversation-id"] == ""
    assert resolve(root["data-conversations-url"]).url_name == "conversation-list"


def test_page_has_test_hooks_for_composer_and_status(client, alice):
    """Composer, send button, stop button and status line carry data-testid hooks."""
    conversation = make_conversation(alice)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert by_testid(html, "composer-input")[0].get("name") == "content"
    assert by_testid(html, "send-button")[0].get("type") == "submit"
    assert by_testid(html, "stop-button")
    (status,) = by_testid(html, "stream-status")
    assert status["data-state"] == "connecting"
    assert status["role"] == "status"


def test_page_has_message_template_for_the_script(client, alice):
    """A <template> holds the bubble markup the script clones for new messages."""
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert elements(html, "template", id="message-template")
    (bubble,) = elements(html, in_template=True, data_testid="message")
    assert {"data-message-id", "data-role", "data-status"} <= bubble.keys()
    assert elements(html, in_template=True, data_testid="message-body")
    assert elements(html, in_template=True, data_testid="message-status")


def test_page_has_logout_form_with_csrf_token(client, alice):
    """The logout control is a POST form carrying a CSRF token (which the script reuses)."""
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert elements(html, "form", method="post", action=reverse("logout"))
    assert elements(html, "input", name="csrfmiddlewaretoken")


# --- long conversations -------------------------------------------------------------


def make_turns(conversation, spec: str) -> list[Message]:
    """Messages from a spec such as "qa qaa qa": each `q` a question, each `a` an answer to
    the question before it (two or more: regenerations); oldest first, a second apart."""
    start = timezone.now() - timedelta(days=1)
    rows: list[Message] = []
    question = answer = None
    for kind in spec.replace(" ", ""):
        message = Message(
            conversation=conversation,
            role="user" if kind == "q" else "assistant",
            reply_to=None if kind == "q" else question,
            parent=answer if kind == "q" else None,
            content=f"**message {len(rows):04d}**",
            created_at=start + timedelta(seconds=len(rows)),
        )
        question = message if kind == "q" else question
        answer = message if kind == "a" else answer
        rows.append(message)
    Message.objects.bulk_create(rows)
    return rows


def test_a_long_conversation_page_renders_only_its_latest_messages(client, alice):
    """With 500 messages the page holds only the latest CHAT_MESSAGE_PAGE_SIZE, oldest
    first, and points the script at the API page of the messages before them."""
    from chat.conf import chat_settings

    assert chat_settings.MESSAGE_PAGE_SIZE == 50
    conversation = make_conversation(alice)
    history = make_turns(conversation, "qa" * 250)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    bubbles = by_testid(html, "message")
    assert [b["data-message-id"] for b in bubbles] == [str(m.pk) for m in history[-50:]]
    assert "message 0449" not in html and "message 0450" in html
    (root,) = elements(html, data_chat_root=True)
    older = root["data-older-messages-url"]
    assert resolve(older.split("?")[0]).url_name == "message-list"
    page = client.get(older).json()
    assert [m["id"] for m in page["results"]] == [str(m.pk) for m in history[-51:-101:-1]]
    assert page["next"]


def test_the_page_starts_at_a_question_so_a_turns_answers_stay_together(client, alice, settings):
    """When the latest N messages begin inside a regenerated turn, the page reaches back to
    the turn's question: its answers all get their "n / m" switcher, and the page's link to
    older messages starts right before that question."""
    settings.CHAT_MESSAGE_PAGE_SIZE = 3
    conversation = make_conversation(alice)
    history = make_turns(conversation, "qa qaaa")
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    bubbles = by_testid(html, "message")
    assert [b["data-message-id"] for b in bubbles] == [str(m.pk) for m in history[2:]]
    assert [("hidden" in b) for b in bubbles] == [False, True, True, False]
    assert all(f">{n} / 3</span>" in html for n in (1, 2, 3))
    (root,) = elements(html, data_chat_root=True)
    older = client.get(root["data-older-messages-url"]).json()
    assert [m["id"] for m in older["results"]] == [str(history[1].pk), str(history[0].pk)]
    assert older["next"] is None


@pytest.fixture
def render_calls(monkeypatch):
    """Counts markdown renderings wherever the page and the API call the renderer."""
    import chat.services
    import chat.views
    from chat import rendering

    calls: list[str] = []

    def counting(text):
        calls.append(text)
        return rendering.render_markdown(text)

    monkeypatch.setattr(chat.services, "render_markdown", counting, raising=False)
    monkeypatch.setattr(chat.views, "render_markdown", counting)
    return calls


def test_an_answer_is_rendered_once_not_on_every_view(client, alice, render_calls):
    """The first view renders each finished answer's markdown and stores the sanitized
    HTML; later views of the page, and the history API, use the stored HTML."""
    from chat.rendering import render_markdown

    conversation = make_conversation(alice)
    history = make_turns(conversation, "qa" * 10)
    client.force_login(alice)

    first = client.get(page_url(conversation)).content.decode()
    assert len(render_calls) == 10
    stored = Message.objects.get(pk=history[1].pk)
    assert stored.html == render_markdown(history[1].content)
    assert "<strong>message 0001</strong>" in first

    render_calls.clear()
    second = client.get(page_url(conversation)).content.decode()
    api = client.get(reverse("message-list", kwargs={"conversation_id": conversation.pk}))
    assert render_calls == []
    assert second.count("<strong>message 00") == 10
    assert api.json()["results"][1]["html"] == stored.html


def test_stored_html_is_rendered_again_for_other_text_or_rules(
    client, alice, render_calls, monkeypatch
):
    """Stored HTML is used only for the text and rendering rules it was made from: an
    answer edited (in the admin) or a change of rules (a sanitizer upgrade) renders again."""
    from chat import rendering

    conversation = make_conversation(alice)
    history = make_turns(conversation, "qa qa")
    client.force_login(alice)
    client.get(page_url(conversation))

    Message.objects.filter(pk=history[1].pk).update(content="edited *text*")
    render_calls.clear()
    html = client.get(page_url(conversation)).content.decode()
    assert render_calls == ["edited *text*"]
    assert "edited <em>text</em>" in html

    monkeypatch.setattr(rendering, "_rules", lambda: b"stricter rules\0")
    render_calls.clear()
    client.get(page_url(conversation))
    assert sorted(render_calls) == sorted(["edited *text*", history[3].content])


def test_an_answer_being_written_is_rendered_but_not_stored(client, alice, render_calls):
    """The answer still streaming is rendered as it stands for the page (the script takes
    over) and nothing is stored for it: its text is still changing."""
    conversation = make_conversation(alice)
    question = add_message(conversation, role="user", content="q")
    answer = add_message(
        conversation, role="assistant", content="so *far*", status="streaming", reply_to=question
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert "so <em>far</em>" in html
    assert render_calls == ["so *far*"]
    answer.refresh_from_db()
    assert (answer.html, answer.html_key) == ("", "")


# --- markdown, regenerations and controls -------------------------------------------


def test_assistant_messages_are_rendered_markdown_and_user_messages_are_text(client, alice):
    """Answers are rendered server-side (sanitized markdown with code language classes); the
    user's own text is shown as typed; both keep their raw text for the script."""
    conversation = make_conversation(alice)
    now = timezone.now()
    add_message(conversation, role="user", content="**not bold** please", created_at=now)
    add_message(
        conversation,
        role="assistant",
        content="Here is **bold**.\n\n```python\nprint('<hi>')\n```\n\n[bad](javascript:x())",
        created_at=now + timedelta(seconds=1),
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert "<strong>bold</strong>" in html
    assert "<pre><code class=\"language-python\">print('&lt;hi&gt;')" in html
    assert 'href="javascript' not in html
    assert "**not bold** please</div>" in html
    sources = elements(html, "template", data_testid="message-source")
    assert len(sources) == 2


def test_only_the_latest_attempt_at_a_turn_is_shown(client, alice):
    """Regenerated answers stay in the database; the page shows the latest attempt at each
    user turn and hides earlier ones behind an "n / m" switcher."""
    conversation = make_conversation(alice)
    now = timezone.now()
    question = add_message(conversation, role="user", content="Pick a number", created_at=now)
    first = add_message(
        conversation,
        role="assistant",
        content="Seven.",
        reply_to=question,
        created_at=now + timedelta(seconds=1),
    )
    second = add_message(
        conversation,
        role="assistant",
        content="Forty-two.",
        reply_to=question,
        created_at=now + timedelta(seconds=2),
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    bubbles = {b["data-message-id"]: b for b in by_testid(html, "message")}
    assert "hidden" in bubbles[str(first.pk)]
    assert "hidden" not in bubbles[str(second.pk)]
    assert bubbles[str(first.pk)]["data-reply-to"] == str(question.pk)
    assert bubbles[str(second.pk)]["data-reply-to"] == str(question.pk)
    assert ">1 / 2</span>" in html and ">2 / 2</span>" in html


def test_regenerate_is_offered_on_the_last_answer_and_retry_after_an_error(client, alice):
    """Only the answer that ends the conversation can be regenerated; a failed one offers
    Retry instead."""
    conversation = make_conversation(alice)
    now = timezone.now()
    q1 = add_message(conversation, role="user", content="q1", created_at=now)
    add_message(
        conversation,
        role="assistant",
        content="a1",
        reply_to=q1,
        created_at=now + timedelta(seconds=1),
    )
    q2 = add_message(conversation, role="user", content="q2", created_at=now + timedelta(seconds=2))
    last = add_message(
        conversation,
        role="assistant",
        content="",
        status="failed",
        error_code="overloaded",
        reply_to=q2,
        created_at=now + timedelta(seconds=3),
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()
    visible_regenerate = [b for b in by_testid(html, "regenerate-button") if "hidden" not in b]
    visible_retry = [b for b in by_testid(html, "retry-button") if "hidden" not in b]
    assert visible_regenerate == []
    assert len(visible_retry) == 1

    Message.objects.filter(pk=last.pk).update(status="complete", content="a2")
    html = client.get(page_url(conversation)).content.decode()
    visible_regenerate = [b for b in by_testid(html, "regenerate-button") if "hidden" not in b]
    visible_retry = [b for b in by_testid(html, "retry-button") if "hidden" not in b]
    assert len(visible_regenerate) == 1
    assert visible_retry == []


def test_answers_show_their_model_and_token_usage(client, alice, two_models):
    """A finished answer shows the label of the model that produced it (whatever the
    conversation uses now) and its token usage; estimates are marked as such."""
    conversation = make_conversation(alice)
    add_message(
        conversation,
        role="assistant",
        content="hi",
        model="model-b",
        input_tokens=12,
        output_tokens=34,
    )
    add_message(
        conversation,
        role="assistant",
        content="stopped",
        status="cancelled",
        model="demo",  # no longer offered: its id is shown
        input_tokens=5,
        output_tokens=2,
        usage_estimated=True,
    )
    # From before models were recorded: no label, and no separator before the usage.
    add_message(conversation, role="assistant", content="old", input_tokens=1, output_tokens=1)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    labels = re.findall(r'data-testid="message-model">([^<]*)<', html)
    assert labels == ["Model B", "demo", ""]
    usage = re.findall(r'data-testid="message-usage">([^<]*)<', html)
    assert usage == [" · 12 in · 34 out", " · ~5 in · ~2 out", "1 in · 1 out"]
    meta = by_testid(html, "message-meta")
    assert "estimates" in meta[1]["title"]
    assert "title" not in meta[0]


def test_the_header_shows_the_conversations_token_total(client, alice):
    """The header says how many tokens the conversation used, split in and out in its
    tooltip; a new conversation says 0."""
    conversation = make_conversation(alice)
    add_message(conversation, role="assistant", content="a", input_tokens=1200, output_tokens=34)
    add_message(conversation, role="assistant", content="b", input_tokens=None)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()
    (usage,) = by_testid(html, "conversation-usage")
    assert re.search(r"data-usage-total>1,234</span> tokens</p>", html)
    assert usage["title"].startswith("1,200 in · 34 out")
    assert (usage["data-input-tokens"], usage["data-output-tokens"]) == ("1200", "34")
    html = client.get(page_url(make_conversation(alice))).content.decode()
    assert re.search(r"data-usage-total>0</span> tokens</p>", html)


def test_settings_dialog_holds_model_and_system_prompt(client, alice, two_models):
    """The settings dialog is prefilled with the system prompt and offers a select of the
    offered models by label, the conversation's selected."""
    conversation = make_conversation(alice)
    Conversation.objects.filter(pk=conversation.pk).update(
        system_prompt="Be <brief>.", model="model-b"
    )
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert by_testid(html, "conversation-settings")
    assert elements(html, "select", data_testid="settings-model")
    assert ">Be &lt;brief&gt;.</textarea>" in html
    options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', html)
    assert options == [("model-a", "", "Model A"), ("model-b", " selected", "Model B")]


def test_the_home_page_offers_the_models_for_a_new_conversation(
    client, alice, settings, two_models
):
    """The home composer has a select of the offered models, the default selected."""
    settings.CHAT_MODEL = "model-b"
    client.force_login(alice)

    html = client.get(reverse("chat:home")).content.decode()

    assert elements(html, "select", data_testid="composer-model")
    options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', html)
    assert options == [("model-a", "", "Model A"), ("model-b", " selected", "Model B")]


def test_the_settings_select_shows_the_model_answering_a_retired_one(client, alice, two_models):
    """A conversation whose model is no longer offered: the select offers the offered ones,
    with the default (what answers it now) selected."""
    conversation = make_conversation(alice)  # "test-model": not offered
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    options = re.findall(r'<option value="([^"]*)"( selected)?>', html)
    assert options == [("model-a", " selected"), ("model-b", "")]
    assert by_testid(html, "rename-conversation")
    assert by_testid(html, "delete-conversation")
    assert by_testid(html, "delete-dialog")


def test_conversation_page_exposes_the_urls_for_the_controls(client, alice):
    """The root element carries the conversation API URL and the regenerate URL template."""
    conversation = make_conversation(alice)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    (root,) = elements(html, data_chat_root=True)
    detail = resolve(root["data-conversation-api-url"])
    assert detail.url_name == "conversation-detail"
    assert detail.kwargs == {"conversation_id": conversation.pk}
    placeholder = root["data-placeholder-id"]
    assert root["data-regenerate-url-template"] == f"/api/v1/messages/{placeholder}/regenerate/"
    assert root["data-model"] == "test-model"
    assert root["data-home-url"] == reverse("chat:home")


def test_conversation_page_offers_export_links_that_work_without_the_script(client, alice):
    """The header's Export menu holds two plain download links, Markdown and JSON, to the
    export API; home has no conversation to export."""
    conversation = make_conversation(alice)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    assert elements(html, "details", data_testid="export-menu")
    api = f"/api/v1/conversations/{conversation.pk}/export/"
    for testid, fmt in (("export-markdown", "md"), ("export-json", "json")):
        (link,) = elements(html, "a", data_testid=testid)
        assert link["href"] == f"{api}?format={fmt}"
        assert "download" in link
    home = client.get(reverse("chat:home")).content.decode()
    assert not by_testid(home, "export-menu")


def test_messages_carry_their_time(client, alice):
    """Each message has a <time> with its ISO 8601 moment (the script shows it in the
    reader's time zone) and the full date and time as its title."""
    conversation = make_conversation(alice)
    sent = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    add_message(conversation, role="user", content="Hi", created_at=sent)
    client.force_login(alice)

    html = client.get(page_url(conversation)).content.decode()

    (time,) = elements(html, "time", data_testid="message-time")
    assert time["datetime"] == "2026-05-06T07:08:09+00:00"
    assert time["title"] == "6 May 2026, 07:08:09 UTC"
    assert ">07:08</time>" in html
    (template_time,) = elements(html, "time", in_template=True, data_testid="message-time")
    assert "datetime" not in template_time


@pytest.mark.parametrize("name", ["home", "conversation"])
def test_every_page_lists_its_keyboard_shortcuts(client, alice, name):
    """A "Keyboard shortcuts" dialog, opened by a header button, lists each shortcut in <kbd>."""
    conversation = make_conversation(alice)
    client.force_login(alice)
    url = reverse("chat:home") if name == "home" else page_url(conversation)

    html = client.get(url).content.decode()

    assert elements(html, "dialog", data_testid="shortcuts-dialog")
    (button,) = elements(html, "button", data_testid="shortcuts-button")
    assert button["aria-keyshortcuts"] == "?"
    dialog = html[html.index('data-testid="shortcuts-dialog"') :]
    dialog = dialog[: dialog.index("</dialog>")]
    for keys in (
        "<kbd>Enter</kbd>",
        "<kbd>Shift</kbd> <kbd>Enter</kbd>",
        "<kbd>Esc</kbd>",
        "<kbd data-mod>Ctrl</kbd> <kbd>Shift</kbd> <kbd>O</kbd>",
        "<kbd data-mod>Ctrl</kbd> <kbd>Shift</kbd> <kbd>C</kbd>",
        "<kbd>Shift</kbd> <kbd>Esc</kbd>",
        "<kbd data-mod>Ctrl</kbd> <kbd>K</kbd>",
        "<kbd>?</kbd>",
    ):
        assert keys in dialog


def test_messages_api_tells_which_turn_an_answer_replies_to(client, alice):
    """The page groups regenerated answers by `reply_to`, which the history API includes."""
    conversation = make_conversation(alice)
    question = add_message(conversation, role="user", content="q")
    answer = add_message(conversation, role="assistant", content="a", reply_to=question)
    client.force_login(alice)

    response = client.get(reverse("message-list", kwargs={"conversation_id": conversation.pk}))

    replies = {m["id"]: m["reply_to"] for m in response.json()["results"]}
    assert replies == {str(question.pk): None, str(answer.pk): str(question.pk)}


def test_sidebar_starts_collapsed_when_the_reader_collapsed_it(client, alice):
    """The collapsed-sidebar cookie set by the script is honoured on the next page."""
    client.force_login(alice)

    (root,) = elements(client.get(reverse("chat:home")).content.decode(), data_chat_root=True)
    assert "is-sidebar-collapsed" not in root["class"]

    client.cookies["chatsite_sidebar"] = "collapsed"
    (root,) = elements(client.get(reverse("chat:home")).content.decode(), data_chat_root=True)
    assert "is-sidebar-collapsed" in root["class"]


# --- security headers ---------------------------------------------------------------

EXPECTED_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def csp_of(response) -> dict[str, str]:
    directives = (part.strip() for part in response["Content-Security-Policy"].split(";"))
    return dict(part.split(" ", 1) for part in directives if part)


@pytest.mark.parametrize("name", ["home", "conversation", "login", "signup"])
def test_pages_send_a_strict_csp_and_referrer_policy(client, alice, name):
    """Every page gets the strict policy (no inline script or style, no remote images) and
    `Referrer-Policy: same-origin`, so stream URLs never leak in a Referer."""
    if name in ("home", "conversation"):
        client.force_login(alice)
    url = {
        "home": reverse("chat:home"),
        "conversation": page_url(make_conversation(alice)),
        "login": reverse("login"),
        "signup": reverse("signup"),
    }[name]

    response = client.get(url)

    assert response.status_code == 200
    assert csp_of(response) == EXPECTED_CSP
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("name", ["home", "conversation", "login", "signup"])
def test_our_pages_have_no_inline_script_style_or_handlers(client, alice, name):
    """Our templates carry no inline <script>, <style>, style="" or on*="" attributes."""
    if name in ("home", "conversation"):
        client.force_login(alice)
    conversation = make_conversation(alice)
    add_message(conversation, role="assistant", content="| a |\n|--:|\n| 1 |")
    url = {
        "home": reverse("chat:home"),
        "conversation": page_url(conversation),
        "login": reverse("login"),
        "signup": reverse("signup"),
    }[name]

    html = client.get(url).content.decode()

    parser = _Elements()
    parser.feed(html)
    for tag, attrs, _ in parser.found:
        assert tag != "style"
        if tag == "script":
            assert attrs.get("src"), "inline script"
        assert "style" not in attrs, (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)


def test_swagger_ui_inline_code_carries_the_csp_nonce(client, alice):
    """The API docs page runs its inline init script under a per-response nonce."""
    client.force_login(alice)

    response = client.get(reverse("docs"))

    html = response.content.decode()
    policy = csp_of(response)
    nonce = policy["script-src"].split("'nonce-", 1)[1].split("'", 1)[0]
    assert policy["style-src"] == f"'self' 'nonce-{nonce}'"
    inline = [s for s in elements(html, "script") if not s.get("src")]
    assert [s["nonce"] for s in inline] == [nonce]
    assert f'<style nonce="{nonce}">' in html
