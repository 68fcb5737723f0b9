"""The OpenAPI schema documents every operation's errors, pages and request constraints."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.api.views import ConversationInputSerializer, MessageListCreateApi

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
ERROR_REF = "#/components/schemas/Error"


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


def request_schema(schema: dict, operation: dict) -> dict | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    ref = body["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_operation_documents_its_errors_with_the_error_body(schema):
    """Every operation documents 401 and at least one more error, every error status has the
    one JSON error body, and the statuses that follow from the operation are all there:
    404 for ids in the path, 400/413/415 for a request body, 403 (CSRF) for writes with
    session authentication."""
    for name, operation in operations(schema):
        responses = operation["responses"]
        errors = {status for status in responses if status >= "400"}
        assert "401" in errors, name
        assert len(errors) >= 2, name
        for status in errors:
            content = responses[status]["content"]
            assert set(content) == {"application/json"}, (name, status)
            assert content["application/json"]["schema"] == {"$ref": ERROR_REF}, (name, status)
            assert responses[status]["description"], (name, status)
        if "{" in name:
            assert "404" in errors, name
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= errors, name
        if {"cookieAuth": []} in operation.get("security", []) and not name.startswith("GET"):
            assert "403" in errors, name


def test_operations_document_the_errors_of_their_services(schema):
    """Sends and regenerations document 409 `run_active`, 429 and 503 with Retry-After;
    stopping documents 409 `message_finished`; both refuse user messages with 400."""
    paths = schema["paths"]
    send = paths["/api/v1/conversations/{conversation_id}/messages/"]["post"]["responses"]
    regenerate = paths["/api/v1/messages/{message_id}/regenerate/"]["post"]["responses"]
    cancel = paths["/api/v1/messages/{message_id}/cancel/"]["post"]["responses"]
    assert "`run_active`" in send["409"]["description"]
    assert "`content_too_long`" in send["413"]["description"]
    assert "`run_active`" in regenerate["409"]["description"]
    assert "`not_latest_answer`" in regenerate["409"]["description"]
    assert "`message_finished`" in cancel["409"]["description"]
    for responses in (regenerate, cancel):
        assert "`not_an_assistant_message`" in responses["400"]["description"]
    for responses in (send, regenerate):
        assert "`overloaded`" in responses["503"]["description"]
        for status in ("429", "503"):
            assert responses[status]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "503" not in cancel
    assert (
        "503" not in paths["/api/v1/conversations/{conversation_id}/messages/"]["get"]["responses"]
    )


@pytest.mark.parametrize(
    ("path", "fields", "parameter"),
    [
        ("/api/v1/conversations/", {"count", "next", "previous", "results"}, "page"),
        (
            "/api/v1/conversations/{conversation_id}/messages/",
            {"next", "previous", "results"},
            "cursor",
        ),
    ],
)
def test_lists_are_declared_as_the_pages_they_return(schema, path, fields, parameter):
    """The conversation list answers numbered pages `{count, next, previous, results}` and
    takes `page`; the history answers cursor pages `{next, previous, results}`."""
    operation = schema["paths"][path]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert page["type"] == "object"
    assert set(page["properties"]) == fields
    assert page["properties"]["results"]["type"] == "array"
    assert page["properties"]["next"]["nullable"] is True
    assert parameter in {p["name"] for p in operation["parameters"]}


def test_message_length_limit_is_the_setting(client, settings):
    """The schema's limit on a message follows CHAT_MAX_MESSAGE_CHARS, as the 413 does."""
    settings.CHAT_MAX_MESSAGE_CHARS = 1234
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    content = schema["components"]["schemas"]["MessageSendInput"]["properties"]["content"]
    assert content["maxLength"] == 1234


# Strings the serializers treat specially: NUL, Python whitespace the regex engines
# disagree on (\x1c-\x1f, \x85 and \ufeff), and ordinary text.
tricky_text = st.text(
    alphabet=st.sampled_from(["\x00", " ", "\t", "\n", "\x1c", "\x85", "\u3000", "\ufeff", "a"]),
    max_size=4,
)


def _pattern(schema: dict, component: str, field: str) -> str:
    field_schema = schema["components"]["schemas"][component]["properties"][field]
    return (field_schema.get("oneOf") or [field_schema])[0]["pattern"]


def _accepts(pattern: str, value: str, *, blank_allowed: bool) -> bool:
    return bool(re.fullmatch(pattern, value)) or (blank_allowed and value == "")


# The schema fixture is only read, so sharing it between examples is what we want.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=tricky_text)
def test_string_patterns_accept_what_the_serializers_accept(schema, value):
    """A request string matches the schema exactly when the serializer accepts it."""
    cases = [
        ("ConversationInput", "model", ConversationInputSerializer, False),
        ("ConversationInput", "title", ConversationInputSerializer, True),
        ("MessageSendInput", "content", MessageListCreateApi.InputSerializer, False),
    ]
    for component, field, serializer_class, blank_allowed in cases:
        accepted = serializer_class(data={field: value}, partial=True).is_valid()
        pattern = _pattern(schema, component, field)
        assert _accepts(pattern, value, blank_allowed=blank_allowed) == accepted, (field, value)


def test_string_patterns_cover_every_request_string(schema):
    """Every writable string of a request body declares what DRF refuses (NUL, blank)."""
    for name, operation in operations(schema):
        body = request_schema(schema, operation)
        if body is None:
            continue
        for field, field_schema in body["properties"].items():
            if field_schema.get("readOnly"):
                continue
            variants = field_schema.get("oneOf") or [field_schema]
            if variants[0]["type"] == "boolean":  # pinned, archived
                continue
            assert variants[0]["type"] == "string", (name, field)
            assert "pattern" in variants[0], (name, field)
            assert not re.fullmatch(variants[0]["pattern"], "a\x00b"), (name, field)
