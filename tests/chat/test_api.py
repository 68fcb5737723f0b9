"""The JSON API under /api/v1/: ownership, pagination, sending, validation, JWT and OpenAPI."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from chat import runs, selectors, streaming
from chat.models import Conversation, Message
from chat.services import conversation_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/conversations/"


def detail_url(conversation_id) -> str:
    return f"/api/v1/conversations/{conversation_id}/"


def messages_url(conversation_id) -> str:
    return f"/api/v1/conversations/{conversation_id}/messages/"


def stream_token_url(conversation_id) -> str:
    return f"/api/v1/conversations/{conversation_id}/stream-token/"


def stream_url(conversation_id) -> str:
    return f"/stream/conversations/{conversation_id}/"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """`response` is a JSON error with `status` and string `code` and `message`."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["code"], str)
    assert body["code"]
    assert isinstance(body["message"], str)
    assert body["message"]
    if code is not None:
        assert body["code"] == code
    return body


def send(client: APIClient, conversation, content: str = "Hello there"):
    return client.post(messages_url(conversation.pk), {"content": content}, format="json")


# --- ownership matrix ----------------------------------------------------------------

# (method, url builder or None for the collection, JSON body, owner's status)
PER_CONVERSATION_ENDPOINTS = [
    pytest.param("get", detail_url, None, 200, id="detail-GET"),
    pytest.param("patch", detail_url, {"title": "Renamed"}, 200, id="detail-PATCH"),
    pytest.param("delete", detail_url, None, 204, id="detail-DELETE"),
    pytest.param("get", messages_url, None, 200, id="messages-GET"),
    pytest.param("post", messages_url, {"content": "Hi"}, 201, id="messages-POST"),
    pytest.param("post", stream_token_url, None, 201, id="stream-token-POST"),
]
COLLECTION_ENDPOINTS = [
    pytest.param("get", None, None, 200, id="list-GET"),
    pytest.param("post", None, {"title": "New"}, 201, id="list-POST"),
]


def _request(client: APIClient, method: str, url: str, body: dict | None):
    return getattr(client, method)(url, body, format="json")


@pytest.mark.parametrize(
    ("method", "url_for", "body", "status"), COLLECTION_ENDPOINTS + PER_CONVERSATION_ENDPOINTS
)
def test_owner_is_served(api_client, conversation, method, url_for, body, status):
    """The owner gets a 2xx from every endpoint."""
    url = LIST_URL if url_for is None else url_for(conversation.pk)
    response = _request(api_client, method, url, body)
    assert response.status_code == status, response.content


@pytest.mark.parametrize(("method", "url_for", "body", "status"), PER_CONVERSATION_ENDPOINTS)
def test_other_users_conversation_is_404(other_user, conversation, method, url_for, body, status):
    """Another user's conversation is a 404 (not a 403) on every endpoint, and stays untouched."""
    client = APIClient()
    client.force_authenticate(other_user)
    response = _request(client, method, url_for(conversation.pk), body)
    assert_error(response, 404, "not_found")
    conversation.refresh_from_db()
    assert conversation.title == "Test chat"
    assert not conversation.messages.exists()


@pytest.mark.parametrize(("method", "url_for", "body", "status"), PER_CONVERSATION_ENDPOINTS)
def test_unknown_conversation_is_404(api_client, method, url_for, body, status):
    """A conversation id that does not exist is a JSON 404 on every endpoint."""
    response = _request(api_client, method, url_for(uuid.uuid4()), body)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "url_for", "body", "status"), COLLECTION_ENDPOINTS + PER_CONVERSATION_ENDPOINTS
)
def test_anonymous_is_401(conversation, method, url_for, body, status):
    """Anonymous requests get a JSON 401 with a Bearer challenge, and change nothing."""
    url = LIST_URL if url_for is None else url_for(conversation.pk)
    response = _request(APIClient(), method, url, body)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Conversation.objects.count() == 1
    assert not Message.objects.exists()


def test_stream_refuses_anonymous_without_token(client, conversation):
    """The SSE endpoint refuses an anonymous request without a token with a JSON 401."""
    assert_error(client.get(stream_url(conversation.pk)), 401, "stream_token_invalid")


def test_stream_refuses_other_users_session(client, other_user, conversation):
    """The SSE endpoint answers another user's session with a JSON 404."""
    client.force_login(other_user)
    assert_error(client.get(stream_url(conversation.pk)), 404, "not_found")


def test_stream_unknown_conversation_is_404(client, user):
    """The SSE endpoint answers an unknown conversation with a JSON 404."""
    client.force_login(user)
    assert_error(client.get(stream_url(uuid.uuid4())), 404, "not_found")


def test_stream_serves_owners_session(client, user, conversation):
    """The owner's session cookie opens the stream: 200 text/event-stream, uncached, unbuffered."""
    client.force_login(user)
    response = client.get(stream_url(conversation.pk))
    try:
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        assert response["X-Accel-Buffering"] == "no"
        assert not response.has_header("Content-Encoding")
    finally:
        response.close()


def test_stream_rejects_post(client, user, conversation):
    """The SSE endpoint only speaks GET: anything else is a JSON 405 that says so in
    `Allow` (RFC 9110 requires it; Schemathesis checks it)."""
    client.force_login(user)
    response = client.post(stream_url(conversation.pk))
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


# --- a database connection lost under a request ----------------------------------------


def _connection_lost(*args, **kwargs):
    raise OperationalError("terminating connection due to administrator command")


def test_an_api_request_whose_database_connection_dies_is_503(api_client, monkeypatch):
    """A query cut by a lost database connection answers 503 `database_unavailable`
    with Retry-After, in the API's JSON error body, never a 500."""
    monkeypatch.setattr(selectors, "conversation_list", _connection_lost)
    response = api_client.get(LIST_URL)
    assert_error(response, 503, "database_unavailable")
    assert int(response["Retry-After"]) > 0


def test_a_stream_whose_database_connection_dies_before_it_starts_is_503(
    client, user, conversation, monkeypatch
):
    """The stream endpoint's own lookups cut the same way: 503 JSON before any stream."""
    client.force_login(user)
    monkeypatch.setattr(streaming, "aconversation_get_for_user", _connection_lost_async)
    response = client.get(stream_url(conversation.pk))
    assert_error(response, 503, "database_unavailable")
    assert int(response["Retry-After"]) > 0


async def _connection_lost_async(*args, **kwargs):
    _connection_lost()


# --- conversations: list, create, detail, update, delete ------------------------------


def test_list_is_paginated(api_client, user):
    """The list is paginated: `count`, `results` and a `next` link while more pages exist."""
    Conversation.objects.bulk_create(
        [Conversation(owner=user, title=f"c{i}", model="m") for i in range(51)]
    )
    first = api_client.get(LIST_URL).json()
    assert first["count"] == 51
    assert len(first["results"]) == 50
    assert first["next"]
    assert first["previous"] is None
    second = api_client.get(first["next"]).json()
    assert len(second["results"]) == 1
    assert second["next"] is None
    ids = {c["id"] for c in first["results"]} | {c["id"] for c in second["results"]}
    assert len(ids) == 51


def test_list_shows_only_own_conversations(api_client, user, other_user):
    """The list holds the user's own conversations and none of anyone else's."""
    mine = conversation_create(owner=user, title="mine")
    conversation_create(owner=other_user, title="theirs")
    body = api_client.get(LIST_URL).json()
    assert body["count"] == 1
    assert [c["id"] for c in body["results"]] == [str(mine.pk)]


def test_list_is_most_recently_updated_first(api_client, user):
    """The list is ordered by `updated_at`, newest first."""
    now = timezone.now()
    old, new, middle = (conversation_create(owner=user, title=t) for t in ("old", "new", "mid"))
    for conversation, age in ((old, 3), (new, 1), (middle, 2)):
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=now - timedelta(minutes=age)
        )
    titles = [c["title"] for c in api_client.get(LIST_URL).json()["results"]]
    assert titles == ["new", "mid", "old"]


def test_sending_a_message_moves_the_conversation_to_the_top(api_client, user):
    """Sending a message bumps the conversation's `updated_at`, so it lists first."""
    older = conversation_create(owner=user, title="older")
    conversation_create(owner=user, title="newer")
    Conversation.objects.filter(pk=older.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert send(api_client, older).status_code == 201
    titles = [c["title"] for c in api_client.get(LIST_URL).json()["results"]]
    assert titles == ["older", "newer"]


def test_list_page_out_of_range_is_json_404(api_client, conversation):
    """A page number past the end, or not a number, is a JSON 404."""
    assert_error(api_client.get(LIST_URL, {"page": 99}), 404, "not_found")
    assert_error(api_client.get(LIST_URL, {"page": "abc"}), 404, "not_found")


def test_create_conversation_defaults(api_client, user, settings, two_models):
    """An empty create makes an untitled conversation owned by the caller on `CHAT_MODEL`,
    with no tokens used yet."""
    settings.CHAT_MODEL = "model-b"
    response = api_client.post(LIST_URL, {}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["title"] == ""
    assert body["model"] == "model-b"
    assert (body["input_tokens"], body["output_tokens"]) == (0, 0)
    conversation = Conversation.objects.get(pk=body["id"])
    assert conversation.owner == user


def test_the_default_model_is_the_first_offered_unless_chat_model_names_one(
    api_client, settings, two_models
):
    """`CHAT_MODEL` unset, or naming a model that is not offered: the first offered one."""
    for chat_model in (None, "claude-not-offered"):
        settings.CHAT_MODEL = chat_model
        body = api_client.post(LIST_URL, {}, format="json").json()
        assert body["model"] == "model-a"
        assert api_client.get("/api/v1/models/").json()["default"] == "model-a"


def test_create_conversation_with_fields(api_client, two_models):
    """Title (stripped), system prompt (verbatim) and model are stored as sent."""
    response = api_client.post(
        LIST_URL,
        {"title": "  Trip plan  ", "system_prompt": "  Be brief.\n", "model": "model-b"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Trip plan"
    assert body["system_prompt"] == "  Be brief.\n"
    assert body["model"] == "model-b"


def test_detail_returns_the_conversation(api_client, conversation):
    """The owner reads the conversation's fields, with absolute links to itself and to its
    messages."""
    body = api_client.get(detail_url(conversation.pk)).json()
    assert body["id"] == str(conversation.pk)
    assert body["title"] == "Test chat"
    assert {
        "id",
        "title",
        "system_prompt",
        "model",
        "created_at",
        "updated_at",
        "input_tokens",
        "output_tokens",
        "pinned",
        "archived",
        "snippet",
    } <= set(body)
    assert body["snippet"] is None
    assert body["url"] == f"http://testserver{detail_url(conversation.pk)}"
    assert body["messages_url"] == f"http://testserver{messages_url(conversation.pk)}"
    assert api_client.get(body["messages_url"]).status_code == 200


def test_patch_changes_only_given_fields(api_client, conversation):
    """PATCH updates the fields it names and leaves the others alone."""
    response = api_client.patch(
        detail_url(conversation.pk), {"system_prompt": "Answer in French."}, format="json"
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Answer in French."
    assert conversation.title == "Test chat"


def test_patch_ignores_read_only_and_unknown_fields(api_client, conversation):
    """PATCH cannot change the id or the owner; unknown fields are ignored."""
    original_id = conversation.pk
    response = api_client.patch(
        detail_url(conversation.pk),
        {"id": str(uuid.uuid4()), "owner": 999, "colour": "red"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["id"] == str(original_id)
    assert Conversation.objects.filter(pk=original_id, owner=conversation.owner).exists()


def test_delete_removes_the_conversation_and_its_messages(api_client, conversation):
    """DELETE answers 204; the conversation and its messages are gone, and it is then a 404."""
    assert send(api_client, conversation).status_code == 201
    response = api_client.delete(detail_url(conversation.pk))
    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()
    assert_error(api_client.get(detail_url(conversation.pk)), 404, "not_found")


def test_unsupported_method_is_json_405(api_client, conversation):
    """PUT on a conversation is a JSON 405."""
    response = api_client.put(detail_url(conversation.pk), {"title": "x"}, format="json")
    assert_error(response, 405, "method_not_allowed")


# --- messages ----------------------------------------------------------------------------


def test_send_returns_user_and_pending_assistant_message(api_client, conversation):
    """A send is 201 with the stored user message and a pending, empty assistant message."""
    response = send(api_client, conversation, "What is SSE?")
    assert response.status_code == 201
    body = response.json()
    user_message, assistant_message = body["user_message"], body["assistant_message"]
    assert user_message["role"] == "user"
    assert user_message["status"] == "complete"
    assert user_message["content"] == "What is SSE?"
    assert assistant_message["role"] == "assistant"
    assert assistant_message["status"] == "pending"
    assert assistant_message["content"] == ""
    assert Message.objects.get(pk=user_message["id"]).conversation == conversation
    assert Message.objects.get(pk=assistant_message["id"]).status == Message.Status.PENDING


def test_content_is_stored_verbatim(api_client, conversation):
    """Leading and trailing whitespace and newlines in content are kept as sent."""
    content = "  indented\ncode\n\n"
    response = send(api_client, conversation, content)
    assert response.status_code == 201
    assert response.json()["user_message"]["content"] == content
    assert Message.objects.get(role="user").content == content


def test_first_message_titles_an_untitled_conversation(api_client, user):
    """An untitled conversation is titled from its first message, whitespace collapsed."""
    conversation = conversation_create(owner=user)
    assert send(api_client, conversation, "  How do\n\nrockets   work?  ").status_code == 201
    conversation.refresh_from_db()
    assert conversation.title == "How do rockets work?"
    assert api_client.get(detail_url(conversation.pk)).json()["title"] == "How do rockets work?"


def test_automatic_title_is_truncated(api_client, user):
    """The automatic title is the first 60 characters of the first message."""
    conversation = conversation_create(owner=user)
    assert send(api_client, conversation, "x" * 500).status_code == 201
    conversation.refresh_from_db()
    assert conversation.title == "x" * 60


def test_send_keeps_an_existing_title(api_client, conversation):
    """A conversation that already has a title keeps it."""
    assert send(api_client, conversation, "Something else").status_code == 201
    conversation.refresh_from_db()
    assert conversation.title == "Test chat"


def test_second_send_while_pending_is_409(api_client, conversation):
    """A send while the previous answer is pending is a 409 `run_active` and stores nothing."""
    assert send(api_client, conversation, "first").status_code == 201
    response = send(api_client, conversation, "second")
    assert_error(response, 409, "run_active")
    assert conversation.messages.count() == 2
    assert not conversation.messages.filter(content="second").exists()


def test_send_while_streaming_is_409(api_client, conversation):
    """A send while the answer is streaming is a 409 `run_active` too."""
    assert send(api_client, conversation).status_code == 201
    Message.objects.filter(role="assistant").update(status=Message.Status.STREAMING)
    assert_error(send(api_client, conversation), 409, "run_active")


def test_send_after_the_answer_finished_is_accepted(api_client, conversation):
    """Once the answer has a final status, the next send is accepted."""
    assert send(api_client, conversation, "first").status_code == 201
    Message.objects.filter(role="assistant").update(status=Message.Status.COMPLETE)
    assert send(api_client, conversation, "second").status_code == 201
    assert conversation.messages.count() == 4


def test_active_run_does_not_block_other_conversations(api_client, user, conversation):
    """A pending answer in one conversation does not block sending in another."""
    assert send(api_client, conversation).status_code == 201
    other = conversation_create(owner=user)
    assert send(api_client, other).status_code == 201


def test_send_starts_one_run_after_commit(
    api_client, conversation, monkeypatch, django_capture_on_commit_callbacks
):
    """A 201 send starts exactly one run, for the returned assistant message, after commit."""
    started: list[str] = []
    monkeypatch.setattr(runs.manager, "start", lambda job: started.append(job.message_id))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = send(api_client, conversation)
        assert started == []
    assert response.status_code == 201
    assert len(callbacks) == 1
    assert started == [response.json()["assistant_message"]["id"]]


def test_refused_send_starts_no_run(
    api_client, conversation, monkeypatch, django_capture_on_commit_callbacks
):
    """A send refused with 409 schedules no run."""
    assert send(api_client, conversation).status_code == 201
    started: list[str] = []
    monkeypatch.setattr(runs.manager, "start", lambda job: started.append(job.message_id))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert send(api_client, conversation).status_code == 409
    assert callbacks == []
    assert started == []


def test_message_history_is_oldest_first(api_client, conversation):
    """The message list is the conversation's history, oldest first, in cursor pages."""
    now = timezone.now()
    for age, content in ((1, "third"), (3, "first"), (2, "second")):
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=content,
            created_at=now - timedelta(minutes=age),
        )
    body = api_client.get(messages_url(conversation.pk)).json()
    assert body["next"] is None
    assert body["previous"] is None
    assert [m["content"] for m in body["results"]] == ["first", "second", "third"]


def test_message_history_lists_the_user_turn_before_its_answer(api_client, conversation):
    """After a send, history lists the user message, then the pending assistant message."""
    sent = send(api_client, conversation).json()
    results = api_client.get(messages_url(conversation.pk)).json()["results"]
    assert [m["id"] for m in results] == [
        sent["user_message"]["id"],
        sent["assistant_message"]["id"],
    ]


def test_message_history_only_shows_this_conversation(api_client, user, conversation):
    """A conversation's history does not include another conversation's messages."""
    other = conversation_create(owner=user)
    Message.objects.create(conversation=other, role=Message.Role.USER, content="elsewhere")
    assert api_client.get(messages_url(conversation.pk)).json()["results"] == []


# --- message history pages ---------------------------------------------------------------


def make_history(conversation, count: int, *, ties: int = 0) -> list[Message]:
    """`count` alternating user/assistant messages, oldest first, a millisecond apart;
    the last `ties` of them share one timestamp (rows the app never makes, but an import
    could), which only their ids order."""
    start = timezone.now() - timedelta(days=1)
    rows = []
    for i in range(count):
        at = start + timedelta(milliseconds=min(i, count - ties) if ties else i)
        user_turn = i % 2 == 0
        rows.append(
            Message(
                conversation=conversation,
                role=Message.Role.USER if user_turn else Message.Role.ASSISTANT,
                content=f"message {i:04d}",
                created_at=at,
                reply_to=None if user_turn else rows[-1],
            )
        )
    Message.objects.bulk_create(rows)
    return sorted(rows, key=lambda m: (m.created_at, m.pk))


def walk(client: APIClient, url: str, link: str = "next") -> list[list[str]]:
    """The ids of every page from `url` on, following `link` until there is none."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([m["id"] for m in body["results"]])
        url = body[link]
        assert len(pages) < 100, "the pages never end"
    return pages


def walk_to_last_url(client: APIClient, url: str) -> str:
    while (following := client.get(url).json()["next"]) is not None:
        url = following
    return url


@pytest.mark.parametrize("ties", [0, 7], ids=["distinct-times", "with-tied-times"])
def test_cursor_pages_walk_the_whole_history_exactly_once_in_order(api_client, conversation, ties):
    """Following `next` from the first page visits every message once, oldest first, in
    pages of `page_size`, and newest first (`ordering=-created_at`) in reverse; messages
    with the same time keep one order. `previous` walks back over the same pages (when no
    two messages share a time: DRF's offsets can skip some of a tie when a walk turns)."""
    history = [str(m.pk) for m in make_history(conversation, 123, ties=ties)]
    url = f"{messages_url(conversation.pk)}?page_size=10"

    oldest_first = walk(api_client, url)
    assert [len(page) for page in oldest_first] == [10] * 12 + [3]
    assert [pk for page in oldest_first for pk in page] == history

    newest_first = walk(api_client, f"{url}&ordering=-created_at")
    assert [pk for page in newest_first for pk in page] == history[::-1]

    if ties:
        return
    last = api_client.get(walk_to_last_url(api_client, url)).json()
    back = walk(api_client, last["previous"], "previous")
    assert [pk for page in back[::-1] for pk in page] + [m["id"] for m in last["results"]] == (
        history
    )


def test_a_message_sent_while_a_reader_pages_back_shifts_nothing(api_client, conversation):
    """Cursor pages are positions, not offsets: a message sent between two requests neither
    repeats nor skips anything in the pages that follow."""
    history = [str(m.pk) for m in make_history(conversation, 30)]
    first = api_client.get(f"{messages_url(conversation.pk)}?ordering=-created_at&page_size=10")
    send(api_client, conversation, "a new question")

    rest = walk(api_client, first.json()["next"])
    seen = [m["id"] for m in first.json()["results"]] + [pk for page in rest for pk in page]
    assert seen == history[::-1]


def test_page_size_defaults_to_the_setting_and_is_bounded(api_client, conversation, settings):
    """Without `page_size` a page holds CHAT_MESSAGE_PAGE_SIZE messages; a client may ask
    for up to CHAT_MESSAGE_PAGE_SIZE_MAX, and more (or a size that is not a positive
    number) is a 400 that names the parameter."""
    settings.CHAT_MESSAGE_PAGE_SIZE = 4
    settings.CHAT_MESSAGE_PAGE_SIZE_MAX = 6
    make_history(conversation, 10)
    url = messages_url(conversation.pk)

    assert len(api_client.get(url).json()["results"]) == 4
    assert len(api_client.get(f"{url}?page_size=6").json()["results"]) == 6
    for bad in ("7", "0", "-1", "ten", ""):
        body = assert_error(api_client.get(f"{url}?page_size={bad}"), 400, "invalid")
        assert "page_size" in body["errors"]


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("YQ", id="not-base64"),
        pytest.param("bz0tMQ==", id="negative-offset"),  # o=-1
        pytest.param("cD1ub3QtYS10aW1l", id="position-not-a-time"),  # p=not-a-time
        pytest.param("cD0yMDI2LTAxLTAxIDAwOjAwOjAw", id="position-without-zone"),
        pytest.param("cD0yMDI2LTEzLTAxIDAwOjAwOjAwKzAwOjAw", id="month-13"),
    ],
)
def test_a_bad_cursor_is_a_json_404_not_a_500(api_client, conversation, cursor):
    """A cursor the server did not make is refused like DRF refuses one (404, `Invalid
    cursor.`), including a well-encoded one whose position is not a time with a zone."""
    make_history(conversation, 3)
    response = api_client.get(f"{messages_url(conversation.pk)}?cursor={cursor}")
    assert assert_error(response, 404, "invalid_cursor")["message"] == "Invalid cursor."


def test_an_unknown_ordering_is_400(api_client, conversation):
    """Only `created_at` and `-created_at` order the history; anything else is a 400."""
    for bad in ("id", "-content", "created_at,id", ""):
        body = assert_error(
            api_client.get(f"{messages_url(conversation.pk)}?ordering={bad}"), 400, "invalid"
        )
        assert "ordering" in body["errors"]


def test_history_carries_each_finished_answers_sanitized_html(api_client, conversation):
    """A finished answer comes with its server-rendered, sanitized HTML (what the page shows
    for it); user messages and unfinished answers have none."""
    from chat.rendering import render_markdown

    earlier = timezone.now() - timedelta(minutes=1)
    question = Message.objects.create(
        conversation=conversation, role="user", content="**hi** <b>", created_at=earlier
    )
    answer = "Hello **there** <script>alert(1)</script> [x](javascript:alert(1))"
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=answer,
        reply_to=question,
        created_at=earlier + timedelta(seconds=1),
    )
    send(api_client, conversation)

    results = api_client.get(messages_url(conversation.pk)).json()["results"]

    assert [(m["role"], m["status"]) for m in results] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "pending"),
    ]
    assert results[1]["html"] == render_markdown(answer)
    assert "<strong>there</strong>" in results[1]["html"]
    assert "&lt;script&gt;" in results[1]["html"]
    assert "<script" not in results[1]["html"]
    assert "href" not in results[1]["html"]
    assert [m["html"] for m in (results[0], results[2], results[3])] == [None, None, None]


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field_code"),
    [
        pytest.param({"content": ""}, "blank", id="empty"),
        pytest.param({"content": "   \n\t "}, "blank", id="whitespace-only"),
        pytest.param({}, "required", id="missing"),
        pytest.param({"text": "hi"}, "required", id="wrong-field"),
        pytest.param({"content": None}, "null", id="null"),
        pytest.param({"content": ["hi"]}, "invalid", id="list"),
        pytest.param({"content": {"text": "hi"}}, "invalid", id="object"),
        pytest.param({"content": True}, "invalid", id="boolean"),
        pytest.param({"content": "a\x00b"}, "null_characters_not_allowed", id="nul"),
    ],
)
def test_invalid_content_is_400(api_client, conversation, payload, field_code):
    """Content that is empty, blank, missing, not a string, or holds NUL is a 400 on `content`."""
    response = api_client.post(messages_url(conversation.pk), payload, format="json")
    body = assert_error(response, 400, "invalid")
    assert body["error_codes"]["content"] == [field_code]
    assert body["message"].startswith("content: ")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("raw", "field_code"),
    [
        pytest.param(r'{"content": "a\u0000b"}', "null_characters_not_allowed", id="nul"),
        pytest.param(r'{"content": "\ud800"}', "surrogate_characters_not_allowed", id="surrogate"),
    ],
)
def test_unstorable_characters_are_400(api_client, conversation, raw, field_code):
    """JSON-escaped NUL or lone surrogates, which PostgreSQL cannot store, are a 400."""
    response = api_client.post(messages_url(conversation.pk), raw, content_type="application/json")
    body = assert_error(response, 400, "invalid")
    assert body["error_codes"]["content"] == [field_code]
    assert not Message.objects.exists()


@pytest.mark.parametrize("content", [123, 1.5], ids=["int", "float"])
def test_numeric_content_is_400(api_client, conversation, content):
    """Content that is a JSON number, not a string, is a 400."""
    response = api_client.post(messages_url(conversation.pk), {"content": content}, format="json")
    assert_error(response, 400, "invalid")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("null", id="null"),
        pytest.param("[]", id="list"),
        pytest.param('"hi"', id="str"),
    ],
)
def test_non_object_json_body_is_400(api_client, conversation, body):
    """A JSON body that is not an object is a 400."""
    response = api_client.post(messages_url(conversation.pk), body, content_type="application/json")
    assert_error(response, 400, "invalid")


def test_content_over_the_limit_is_413(api_client, conversation, settings):
    """Content longer than `CHAT_MAX_MESSAGE_CHARS` is a 413 `content_too_long`, nothing stored."""
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    response = send(api_client, conversation, "x" * 11)
    body = assert_error(response, 413, "content_too_long")
    assert "10" in body["message"]
    assert not Message.objects.exists()


def test_content_exactly_at_the_limit_is_accepted(api_client, conversation, settings):
    """Content of exactly `CHAT_MAX_MESSAGE_CHARS` characters is accepted."""
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    response = send(api_client, conversation, "x" * 10)
    assert response.status_code == 201
    assert response.json()["user_message"]["content"] == "x" * 10


def test_content_limit_counts_characters_not_bytes(api_client, conversation, settings):
    """The limit counts characters: ten multi-byte characters fit a limit of ten."""
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    assert send(api_client, conversation, "é😀" * 5).status_code == 201


def test_malformed_json_is_400(api_client, conversation):
    """A body that is not valid JSON is a JSON 400 `parse_error`."""
    response = api_client.post(
        messages_url(conversation.pk), '{"content": "hi"', content_type="application/json"
    )
    assert_error(response, 400, "parse_error")
    assert not Message.objects.exists()


def test_deeply_nested_json_is_400(user, conversation):
    """A pathologically nested JSON body is a JSON 400, not a server error."""
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    response = client.post(
        messages_url(conversation.pk), "[" * 100_000, content_type="application/json"
    )
    assert_error(response, 400, "parse_error")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_wrong_content_type_is_415(api_client, conversation, content_type):
    """A body in a media type the API does not parse is a JSON 415."""
    response = api_client.post(messages_url(conversation.pk), "hi", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert not Message.objects.exists()


def test_error_checks_run_after_ownership(other_user, conversation):
    """Invalid input on another user's conversation is still a 404: nothing about it leaks."""
    client = APIClient()
    client.force_authenticate(other_user)
    response = client.post(messages_url(conversation.pk), {"content": ""}, format="json")
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"title": "t" * 201}, "title", id="title-too-long"),
        pytest.param({"title": "a\x00b"}, "title", id="title-nul"),
        pytest.param({"title": ["x"]}, "title", id="title-list"),
        pytest.param({"model": "m" * 101}, "model", id="model-too-long"),
        pytest.param({"model": ""}, "model", id="model-blank"),
        pytest.param({"model": "claude-not-offered"}, "model", id="model-not-offered"),
        pytest.param({"model": 1}, "model", id="model-number"),
        pytest.param({"system_prompt": "s" * 20_001}, "system_prompt", id="prompt-too-long"),
    ],
)
@pytest.mark.parametrize("method", ["patch", "post"])
def test_invalid_conversation_fields_are_400(api_client, conversation, payload, field, method):
    """Invalid conversation fields are a 400 naming the field, on create and on update."""
    url = detail_url(conversation.pk) if method == "patch" else LIST_URL
    response = getattr(api_client, method)(url, payload, format="json")
    body = assert_error(response, 400, "invalid")
    assert field in body["errors"]
    conversation.refresh_from_db()
    assert conversation.title == "Test chat"
    assert Conversation.objects.count() == 1


def test_title_of_exactly_200_characters_is_accepted(api_client, conversation):
    """A 200-character title is the longest accepted."""
    response = api_client.patch(detail_url(conversation.pk), {"title": "t" * 200}, format="json")
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "t" * 200


# --- models and usage ----------------------------------------------------------------------


def test_the_models_list_is_the_demo_model_alone_without_an_api_key(api_client):
    """The test settings have no API key: the demo model is all there is, and the default."""
    response = api_client.get("/api/v1/models/")
    assert response.status_code == 200
    assert response.json() == {
        "default": "demo",
        "results": [
            {
                "id": "demo",
                "label": "demo model",
                "context_tokens": 200_000,
                "max_output_tokens": 4096,
            }
        ],
    }


def test_the_models_list_is_chat_models_in_order(api_client, two_models):
    """`GET /api/v1/models/` returns `CHAT_MODELS` as configured, in order."""
    body = api_client.get("/api/v1/models/").json()
    assert body == {"default": "model-a", "results": two_models}


def test_the_models_list_needs_credentials():
    assert_error(APIClient().get("/api/v1/models/"), 401)


@pytest.mark.parametrize("method", ["patch", "post"])
def test_a_model_that_is_not_offered_is_400_listing_the_offered_ones(
    api_client, conversation, two_models, method
):
    """Setting a conversation to a model the site does not offer is a 400 (not a 500, not
    stored) whose field error lists the models it does offer."""
    url = detail_url(conversation.pk) if method == "patch" else LIST_URL
    response = getattr(api_client, method)(url, {"model": "gpt-4"}, format="json")
    body = assert_error(response, 400, "invalid")
    assert body["errors"]["model"] == [
        '"gpt-4" is not a model this site offers: choose one of model-a, model-b.'
    ]
    assert body["error_codes"]["model"] == ["invalid_choice"]
    assert not Conversation.objects.filter(model="gpt-4").exists()


def test_patch_sets_an_offered_model(api_client, conversation, two_models):
    response = api_client.patch(detail_url(conversation.pk), {"model": "model-b"}, format="json")
    assert response.status_code == 200
    assert response.json()["model"] == "model-b"
    conversation.refresh_from_db()
    assert conversation.model == "model-b"


def test_every_message_says_which_model_produced_it(api_client, conversation, two_models):
    """An answer records the conversation's model when it is created, in the send's
    response and the history; a user message's `model` is empty."""
    Conversation.objects.filter(pk=conversation.pk).update(model="model-b")
    body = send(api_client, conversation).json()
    assert body["user_message"]["model"] == ""
    assert body["assistant_message"]["model"] == "model-b"
    assert Message.objects.get(pk=body["assistant_message"]["id"]).model == "model-b"
    history = api_client.get(messages_url(conversation.pk)).json()["results"]
    assert [m["model"] for m in history] == ["", "model-b"]


def test_a_conversation_on_a_model_no_longer_offered_is_answered_by_the_default(
    api_client, conversation, two_models
):
    """A conversation stored with a model the site stopped offering keeps working: its
    answers use (and record) the default model, and the conversation keeps its value
    until someone sets another."""
    Conversation.objects.filter(pk=conversation.pk).update(model="claude-retired")
    body = send(api_client, conversation).json()
    assert body["assistant_message"]["model"] == "model-a"
    assert api_client.get(detail_url(conversation.pk)).json()["model"] == "claude-retired"


def test_conversations_carry_their_token_totals(api_client, user, conversation):
    """A conversation's `input_tokens`/`output_tokens` are the sums over its answers (every
    attempt, estimates included; unfinished ones count nothing), in the list and the detail."""
    other = conversation_create(owner=user, title="Other")
    turn = Message.objects.create(conversation=conversation, role="user", content="Hi")
    for tokens in [(10, 5), (7, None), (None, None)]:
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            status="complete" if tokens[0] else "interrupted",
            reply_to=turn,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
        )
    Message.objects.create(
        conversation=other, role="assistant", input_tokens=1000, output_tokens=1000
    )
    detail = api_client.get(detail_url(conversation.pk)).json()
    assert (detail["input_tokens"], detail["output_tokens"]) == (17, 5)
    listed = {c["id"]: c for c in api_client.get(LIST_URL).json()["results"]}
    assert (
        listed[str(conversation.pk)]["input_tokens"],
        listed[str(other.pk)]["output_tokens"],
    ) == (
        17,
        1000,
    )
    patched = api_client.patch(detail_url(conversation.pk), {"title": "x"}, format="json").json()
    assert (patched["input_tokens"], patched["output_tokens"]) == (17, 5)


def test_the_conversation_list_counts_its_totals_in_its_own_queries(
    api_client, user, django_assert_max_num_queries
):
    """The totals are aggregates in the list's query, not a query per conversation."""
    for i in range(5):
        c = conversation_create(owner=user, title=f"c{i}")
        Message.objects.create(conversation=c, role="assistant", input_tokens=i, output_tokens=1)
    with django_assert_max_num_queries(3):  # the user's session aside: count and page
        results = api_client.get(LIST_URL).json()["results"]
    assert sorted(c["input_tokens"] for c in results) == [0, 1, 2, 3, 4]


# --- JWT -----------------------------------------------------------------------------------


def obtain_pair(username: str, password: str):
    return APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json"
    )


def bearer_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_obtain_token_pair(user):
    """Username and password obtain an access and a refresh token."""
    response = obtain_pair(user.username, PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert AccessToken(body["access"])["user_id"] == str(user.pk)
    assert RefreshToken(body["refresh"])["user_id"] == str(user.pk)


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong-password"), ("nobody", PASSWORD)],
    ids=["wrong-password", "unknown-user"],
)
def test_obtain_token_with_bad_credentials_is_401(user, username, password):
    """Wrong credentials get no tokens, only a JSON 401."""
    body = assert_error(obtain_pair(username, password), 401, "no_active_account")
    assert "access" not in body
    assert "refresh" not in body


def test_obtain_token_with_blank_password_is_400(user):
    """A blank password is a validation error naming the field."""
    body = assert_error(obtain_pair(user.username, ""), 400, "invalid")
    assert "password" in body["errors"]


def test_inactive_user_cannot_obtain_tokens(user):
    """An inactive user gets a 401 from the token endpoint."""
    user.is_active = False
    user.save()
    assert_error(obtain_pair(user.username, PASSWORD), 401)


def test_refresh_returns_a_working_access_token(user):
    """The refresh endpoint turns a refresh token into an access token the API accepts."""
    refresh = obtain_pair(user.username, PASSWORD).json()["refresh"]
    response = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    access = response.json()["access"]
    assert bearer_client(access).get(LIST_URL).status_code == 200


def test_refresh_with_an_access_token_is_401(user):
    """An access token is not a refresh token."""
    access = obtain_pair(user.username, PASSWORD).json()["access"]
    response = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": access}, format="json")
    assert_error(response, 401, "token_not_valid")


def test_bearer_access_token_authenticates_the_api(user, other_user, conversation):
    """An access token as `Authorization: Bearer` reads and writes as its user."""
    conversation_create(owner=other_user, title="theirs")
    client = bearer_client(obtain_pair(user.username, PASSWORD).json()["access"])
    listing = client.get(LIST_URL)
    assert listing.status_code == 200
    assert [c["id"] for c in listing.json()["results"]] == [str(conversation.pk)]
    created = client.post(LIST_URL, {"title": "via jwt"}, format="json")
    assert created.status_code == 201
    assert Conversation.objects.get(pk=created.json()["id"]).owner == user
    assert send(client, conversation).status_code == 201


def test_bearer_token_cannot_reach_another_users_conversation(user, other_user, conversation):
    """A valid access token for another user still gets a 404 for this conversation."""
    client = bearer_client(str(AccessToken.for_user(other_user)))
    assert_error(client.get(detail_url(conversation.pk)), 404, "not_found")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_bearer_token_is_401(token):
    """A bearer token that is not a JWT is a JSON 401."""
    assert_error(bearer_client(token).get(LIST_URL), 401)


def test_expired_access_token_is_401(user):
    """An expired access token is a JSON 401."""
    token = AccessToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(hours=1), lifetime=timedelta(minutes=5))
    assert_error(bearer_client(str(token)).get(LIST_URL), 401, "token_not_valid")


def test_access_token_of_inactive_user_is_401(user):
    """An access token stops working once its user is deactivated."""
    token = str(AccessToken.for_user(user))
    user.is_active = False
    user.save()
    assert_error(bearer_client(token).get(LIST_URL), 401)


def test_access_token_made_before_a_password_change_is_401(user):
    """An access token stops working once its user's password changes (`password_changed`);
    one obtained with the new password works."""
    token = obtain_pair(user.username, PASSWORD).json()["access"]
    user.set_password("a-brand-new-passphrase-7")
    user.save()
    assert_error(bearer_client(token).get(LIST_URL), 401, "password_changed")
    fresh = obtain_pair(user.username, "a-brand-new-passphrase-7").json()["access"]
    assert bearer_client(fresh).get(LIST_URL).status_code == 200


def refresh(token: str):
    return APIClient().post("/api/v1/auth/token/refresh/", {"refresh": token}, format="json")


def test_refresh_rotates_and_the_used_refresh_token_is_refused(user):
    """A refresh returns a new refresh token too; the one it used is blacklisted, so a second
    use of it is a JSON 401, while the new one refreshes."""
    first = obtain_pair(user.username, PASSWORD).json()["refresh"]
    response = refresh(first)
    assert response.status_code == 200
    second = response.json()["refresh"]
    assert RefreshToken(second)["jti"] != RefreshToken(first, verify=False)["jti"]
    body = assert_error(refresh(first), 401, "token_not_valid")
    assert "blacklisted" in body["message"]
    assert refresh(second).status_code == 200


def test_refresh_token_made_before_a_password_change_is_401_and_stays_refused(user):
    """A refresh token made before a password change gets 401 `password_changed`, not an
    access token the API would refuse; it is blacklisted, so it stays refused."""
    token = obtain_pair(user.username, PASSWORD).json()["refresh"]
    user.set_password("a-brand-new-passphrase-7")
    user.save()
    assert_error(refresh(token), 401, "password_changed")
    assert_error(refresh(token), 401, "token_not_valid")


def test_refresh_token_of_an_inactive_user_is_401(user):
    """A deactivated user's refresh token gets 401 `no_active_account`."""
    token = obtain_pair(user.username, PASSWORD).json()["refresh"]
    user.is_active = False
    user.save()
    assert_error(refresh(token), 401, "no_active_account")


def test_refresh_token_of_a_deleted_user_is_401(user):
    """A deleted user's refresh token gets a JSON 401, not a server error."""
    token = obtain_pair(user.username, PASSWORD).json()["refresh"]
    user.delete()
    assert_error(refresh(token), 401, "no_active_account")


@pytest.mark.parametrize(
    ("path", "client_for"),
    [
        pytest.param(LIST_URL, lambda: bearer_client("not-a-jwt"), id="bearer"),
        pytest.param("/api/v1/auth/token/refresh/", APIClient, id="refresh"),
    ],
)
def test_invalid_token_error_message_is_human_readable(path, client_for):
    """An invalid-token error message is plain text, not a Python repr."""
    client = client_for()
    if path == LIST_URL:
        response = client.get(path)
    else:
        response = client.post(path, {"refresh": "garbage"}, format="json")
    body = assert_error(response, 401, "token_not_valid")
    assert "ErrorDetail" not in body["message"]
    assert not body["message"].startswith("{")


# --- OpenAPI -------------------------------------------------------------------------------


def test_schema_describes_the_api(client):
    """The OpenAPI schema lists the message and stream-token endpoints."""
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths["/api/v1/conversations/{conversation_id}/messages/"]) >= {"get", "post"}
    assert "post" in paths["/api/v1/conversations/{conversation_id}/stream-token/"]


def _nullable_as_json_schema(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema's null type, so jsonschema can check."""
    if isinstance(node, list):
        return [_nullable_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_as_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


def assert_matches_schema(schema: dict, path: str, body: dict) -> None:
    """`body` is what the schema declares for a 200 to GET `path`."""
    import jsonschema

    declared = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    document = _nullable_as_json_schema({**declared["schema"], "components": schema["components"]})
    jsonschema.validate(body, document)


def test_schema_declares_the_lists_as_the_pages_they_send(api_client, client, user, conversation):
    """The conversation list is declared as numbered pages ({count, next, previous,
    results}) and the message list as cursor pages ({next, previous, results}) with its
    `cursor`, `page_size` (bounded) and `ordering` parameters; real responses of both, on
    a first and a later page, validate against what is declared."""
    settings_max = 200
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    conversations_path = "/api/v1/conversations/"
    messages_path = "/api/v1/conversations/{conversation_id}/messages/"

    def page_schema(path: str) -> dict:
        ref = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        return schema["components"]["schemas"][ref["schema"]["$ref"].rsplit("/", 1)[-1]]

    conversations = page_schema(conversations_path)
    assert set(conversations["properties"]) == {"count", "next", "previous", "results"}
    assert conversations["properties"]["results"]["type"] == "array"
    messages = page_schema(messages_path)
    assert set(messages["properties"]) == {"next", "previous", "results"}
    assert messages["properties"]["results"]["type"] == "array"
    parameters = {p["name"]: p for p in schema["paths"][messages_path]["get"]["parameters"]}
    assert parameters["cursor"]["schema"]["type"] == "string"
    assert parameters["page_size"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": settings_max,
    }
    assert parameters["ordering"]["schema"]["enum"] == ["created_at", "-created_at"]

    for i in range(3):
        conversation_create(owner=user, title=f"c{i}")
    make_history(conversation, 5)
    send(api_client, conversation)
    first = api_client.get(f"{messages_url(conversation.pk)}?page_size=3").json()
    later = api_client.get(first["next"]).json()
    for body in (first, later):
        assert_matches_schema(schema, messages_path, body)
    assert_matches_schema(schema, conversations_path, api_client.get(LIST_URL).json())
    assert_matches_schema(schema, conversations_path, api_client.get(f"{LIST_URL}?page=1").json())


def test_schema_default_format_is_yaml(client):
    """Without a format the schema is served as OpenAPI YAML containing the paths."""
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    text = response.content.decode()
    assert "/api/v1/conversations/{conversation_id}/messages/:" in text
    assert "/api/v1/conversations/{conversation_id}/stream-token/:" in text


def test_docs_use_only_our_static_files(client):
    """Swagger UI is HTML that loads its assets from our static files, never from a CDN."""
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert not re.search(r"https?://", html)
    assert "cdn" not in html.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset


def test_a_page_of_messages_reverses_its_link_once(conversation, monkeypatch):
    """The messages' `conversation_url` costs one `reverse()` per page, not one per message."""
    from chat.api import views

    calls = []

    def counting_reverse(*args, **kwargs):
        calls.append(args)
        return reverse(*args, **kwargs)

    monkeypatch.setattr(views, "reverse", counting_reverse)
    messages = [
        Message.objects.create(conversation=conversation, role="user", content=f"m{i}")
        for i in range(20)
    ]
    request = Request(APIRequestFactory().get("/", HTTP_HOST="testserver"))
    data = views.MessageHistorySerializer(messages, many=True, context={"request": request}).data
    assert {item["conversation_url"] for item in data} == {
        f"http://testserver{detail_url(conversation.pk)}"
    }
    assert len(calls) == 1


def test_message_output_matches_drf_field_by_field(conversation):
    """The hand-written `to_representation` says exactly what the declared fields would."""
    from rest_framework import serializers

    from chat.api.views import MessageOutputSerializer

    now = timezone.now()
    user_message = Message.objects.create(
        conversation=conversation, role="user", content="Hi ✓", status="complete", completed_at=now
    )
    answers = [
        Message.objects.create(
            conversation=conversation, role="assistant", status="pending", reply_to=user_message
        ),
        Message(
            conversation=conversation,
            role="assistant",
            content="Done",
            status="interrupted",
            stop_reason="",
            input_tokens=12,
            output_tokens=0,
            error_code="run_lost",
            error_message="Lost.",
            completed_at=now + timedelta(microseconds=5),
            reply_to=user_message,
            model="demo",
            usage_estimated=True,
        ),
    ]
    request = Request(APIRequestFactory().get("/", HTTP_HOST="testserver"))
    for message in [user_message, *answers]:
        serializer = MessageOutputSerializer(message, context={"request": request})
        generic = serializers.Serializer.to_representation(serializer, message)
        assert serializer.data == generic
        assert list(serializer.data) == list(generic)
        assert generic["conversation_url"] == f"http://testserver{detail_url(conversation.pk)}"
