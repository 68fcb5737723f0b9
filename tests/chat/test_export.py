"""GET /api/v1/conversations/{id}/export/?format=md|json: the conversation as a file."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from chat import export
from chat.models import Message
from chat.services import conversation_create

# The pages are read on the loop's shared thread pool (another connection), which sees
# only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def export_url(conversation_id, fmt: str | None = None) -> str:
    url = f"/api/v1/conversations/{conversation_id}/export/"
    return url if fmt is None else f"{url}?format={fmt}"


def body_of(response) -> str:
    async def collect() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)().decode()


def add(conversation, role, content, *, at, status="complete", reply_to=None, **fields):
    return Message.objects.create(
        conversation=conversation,
        role=role,
        content=content,
        status=status,
        created_at=T0 + timedelta(seconds=at),
        reply_to=reply_to,
        **fields,
    )


@pytest.fixture
def chat(user):
    """A conversation with a regenerated turn, a failed and a cancelled answer."""
    conversation = conversation_create(
        owner=user, title="Trip to Lisbon: plans!", system_prompt="Be brief.\nUse metric."
    )
    q1 = add(conversation, "user", "Where should I stay?", at=0)
    a1 = add(conversation, "assistant", "Alfama.", at=1, reply_to=q1, stop_reason="end_turn")
    a2 = add(
        conversation,
        "assistant",
        "**Baixa**, near the river.",
        at=2,
        reply_to=q1,
        input_tokens=12,
        output_tokens=7,
    )
    q2 = add(conversation, "user", "And to eat?", at=3, parent=a2)
    a3 = add(
        conversation,
        "assistant",
        "",
        at=4,
        status="failed",
        reply_to=q2,
        error_code="overloaded",
        error_message="Claude is overloaded.",
    )
    q3 = add(conversation, "user", "Museums?", at=5, parent=a3)
    a4 = add(conversation, "assistant", "The Gulbenkian", at=6, status="cancelled", reply_to=q3)
    return conversation, [q1, a1, a2, q2, a3, q3, a4]


def test_markdown_export_is_an_attachment_with_every_turn(api_client, chat):
    """Markdown: the title, model and system prompt, then every message in order with its
    time; the regenerated answer, the failure and the stop are noted."""
    conversation, _ = chat
    response = api_client.get(export_url(conversation.pk, "md"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert response["Content-Disposition"] == (
        f'attachment; filename="trip-to-lisbon-plans-{today}.md"'
    )
    assert response["Cache-Control"] == "private, no-store"
    text = body_of(response)
    assert text.startswith("# Trip to Lisbon: plans!\n")
    assert f"- Model: {conversation.model}\n" in text
    assert "> Be brief.\n> Use metric.\n" in text
    headings = re.findall(r"^## (You|Claude) · (.+)$", text, flags=re.MULTILINE)
    assert headings == [
        ("You", "2026-03-04 05:06:07 UTC"),
        ("Claude", "2026-03-04 05:06:08 UTC"),
        ("Claude", "2026-03-04 05:06:09 UTC"),
        ("You", "2026-03-04 05:06:10 UTC"),
        ("Claude", "2026-03-04 05:06:11 UTC"),
        ("You", "2026-03-04 05:06:12 UTC"),
        ("Claude", "2026-03-04 05:06:13 UTC"),
    ]
    order = [text.index(s) for s in ("Where should I stay?", "Alfama.", "**Baixa**", "Museums?")]
    assert order == sorted(order)
    assert "*Answer 1 of 2 to this message (replaced by a regenerated answer)*" in text
    assert "*Answer 2 of 2 to this message (the latest)*" in text
    assert "*12 input tokens · 7 output tokens*" in text
    assert "*Status: failed: Claude is overloaded.*" in text
    assert "The Gulbenkian\n\n*Status: stopped*" in text
    assert text.count("*Status:") == 2


def test_json_export_follows_the_documented_schema(api_client, chat):
    """JSON: the format's name and version, the conversation, and every message oldest first
    with its status, usage, errors, reply_to and which attempt it is."""
    conversation, messages = chat
    response = api_client.get(export_url(conversation.pk, "json"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert re.fullmatch(
        r'attachment; filename="trip-to-lisbon-plans-\d{4}-\d\d-\d\d\.json"',
        response["Content-Disposition"],
    )
    document = json.loads(body_of(response))
    assert document["format"] == "chatsite.conversation"
    assert document["version"] == 1
    assert document["conversation"] == {
        "id": str(conversation.pk),
        "title": "Trip to Lisbon: plans!",
        "system_prompt": "Be brief.\nUse metric.",
        "model": conversation.model,
        "created_at": conversation.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": conversation.updated_at.isoformat().replace("+00:00", "Z"),
    }
    rows = document["messages"]
    assert [row["id"] for row in rows] == [str(m.pk) for m in messages]
    assert set(rows[0]) == {
        "id",
        "role",
        "content",
        "status",
        "created_at",
        "completed_at",
        "reply_to",
        "parent",
        "stop_reason",
        "input_tokens",
        "output_tokens",
        "error_code",
        "error_message",
        "attempt",
        "attempts",
        "superseded",
    }
    assert rows[0]["role"] == "user"
    assert rows[0]["created_at"] == "2026-03-04T05:06:07Z"
    assert (rows[0]["reply_to"], rows[0]["attempt"], rows[0]["superseded"]) == (None, None, False)
    assert (rows[0]["parent"], rows[1]["parent"]) == (None, None)
    assert rows[3]["role"] == "user" and rows[3]["parent"] == rows[2]["id"]
    first, second = rows[1], rows[2]
    assert (first["reply_to"], first["attempt"], first["attempts"]) == (rows[0]["id"], 1, 2)
    assert first["superseded"] is True
    assert first["stop_reason"] == "end_turn"
    assert (second["attempt"], second["attempts"], second["superseded"]) == (2, 2, False)
    assert (second["input_tokens"], second["output_tokens"]) == (12, 7)
    failed, cancelled = rows[4], rows[6]
    assert (failed["status"], failed["error_code"]) == ("failed", "overloaded")
    assert failed["error_message"] == "Claude is overloaded."
    assert (cancelled["status"], cancelled["content"]) == ("cancelled", "The Gulbenkian")


def test_export_reads_in_pages_without_splitting_turns(api_client, chat, monkeypatch):
    """With pages of two messages the file is the same as read in one: a turn whose answers
    straddle pages keeps its attempt numbers."""
    conversation, _ = chat
    whole = json.loads(body_of(api_client.get(export_url(conversation.pk, "json"))))
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    paged = json.loads(body_of(api_client.get(export_url(conversation.pk, "json"))))
    whole.pop("exported_at"), paged.pop("exported_at")
    assert paged == whole


def test_empty_conversation_exports_an_empty_list(api_client, user):
    """A conversation without messages is a valid JSON document with no messages, and an
    untitled one's file is named `conversation-<date>`."""
    conversation = conversation_create(owner=user)
    response = api_client.get(export_url(conversation.pk, "json"))
    assert json.loads(body_of(response))["messages"] == []
    assert 'filename="conversation-' in response["Content-Disposition"]
    markdown = body_of(api_client.get(export_url(conversation.pk, "md")))
    assert markdown.startswith("# Untitled conversation\n")


def test_a_title_in_another_script_still_names_the_file(api_client, user):
    """A title slugify cannot spell in ASCII falls back to `conversation`."""
    conversation = conversation_create(owner=user, title="Путешествие")
    response = api_client.get(export_url(conversation.pk, "md"))
    assert re.fullmatch(
        r'attachment; filename="conversation-\d{4}-\d\d-\d\d\.md"',
        response["Content-Disposition"],
    )
    assert body_of(response).startswith("# Путешествие\n")


@pytest.mark.parametrize("fmt", ["xml", "MD", "", None])
def test_unknown_or_missing_format_is_400(api_client, conversation, fmt):
    """Any format but `md` and `json` is the one JSON error body, 400 `invalid`."""
    response = api_client.get(export_url(conversation.pk, fmt))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "invalid"
    assert body["message"].startswith("format: ")
    assert set(body["errors"]) == {"format"}


def test_errors_are_json_whatever_the_client_accepts(api_client, conversation):
    """Asking for Markdown in Accept does not turn the error into a 406: it is JSON."""
    response = api_client.get(export_url(conversation.pk, "xml"), HTTP_ACCEPT="text/markdown")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    response = api_client.get(export_url(conversation.pk, "md"), HTTP_ACCEPT="text/markdown")
    assert response.status_code == 200


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_other_users_conversation_is_404(other_user, chat, fmt):
    """Another user's conversation is a 404, as a missing one is."""
    conversation, _ = chat
    client = APIClient()
    client.force_authenticate(other_user)
    for url in (export_url(conversation.pk, fmt), export_url(uuid.uuid4(), fmt)):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_anonymous_is_401(chat):
    conversation, _ = chat
    response = APIClient().get(export_url(conversation.pk, "md"))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_the_page_session_can_download(client, user, chat):
    """The page's plain links work: a signed-in session gets the file."""
    conversation, _ = chat
    client.force_login(user)
    response = client.get(export_url(conversation.pk, "md"))
    assert response.status_code == 200
    assert "Where should I stay?" in body_of(response)


def test_schema_documents_both_formats(client):
    """The operation names the `format` parameter and both media types; its errors have
    the one error body (400 for the format)."""
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/conversations/{conversation_id}/export/"]["get"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "format"]
    assert parameter["in"] == "query"
    assert parameter["required"] is True
    assert parameter["schema"]["enum"] == ["json", "md"]
    assert set(operation["responses"]["200"]["content"]) == {"text/markdown", "application/json"}
    assert {"400", "401", "404"} <= set(operation["responses"])
    error = operation["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
