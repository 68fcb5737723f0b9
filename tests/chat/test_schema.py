"""The OpenAPI schema documents every operation's errors, pages and request constraints."""

from __future__ import annotations

import inspect
import re

import pytest
import yaml
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from chat.api.views import (
    ConversationInputSerializer,
    MessageEditInputSerializer,
    MessageListCreateApi,
)

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
ERROR_REF = "#/components/schemas/Error"


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("format", ["json", "yaml"])
def test_the_served_schema_is_valid_openapi(client, format):
    """The schema, as served in JSON and in YAML, passes an OpenAPI validator."""
    response = client.get("/api/v1/schema/", {"format": format})
    assert response.status_code == 200
    document = response.json() if format == "json" else yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    validate(document)


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


def component(schema: dict, ref: str) -> dict:
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_a_conversations_model_is_an_enum_of_the_offered_models(client, settings):
    """The schema says which models a conversation may be set to: `CHAT_MODELS`' ids, read
    when the schema is made (not when the code was imported), each with its label."""
    settings.CHAT_MODELS = [
        {"id": "m-one", "label": "Model One", "context_tokens": 1000, "max_output_tokens": 10},
        {"id": "m-two", "label": "Model Two", "context_tokens": 1000, "max_output_tokens": 10},
    ]
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    model = component(schema, "#/ConversationInput")["properties"]["model"]
    assert component(schema, model["allOf"][0]["$ref"])["enum"] == ["m-one", "m-two"]
    assert "Model Two" in model["description"]
    listed = component(schema, "#/ChatModelList")["properties"]["results"]["items"]["$ref"]
    assert set(component(schema, listed)["properties"]) == {
        "id",
        "label",
        "context_tokens",
        "max_output_tokens",
    }


def test_every_operation_documents_its_errors_with_the_error_body(schema):
    """Every operation documents 401 and at least one more error, every error status has the
    one JSON error body, and the statuses that follow from the operation are all there:
    404 for ids in the path, 400/413/415 for a request body, 403 (CSRF) for writes with
    session authentication."""
    for name, operation in operations(schema):
        responses = operation["responses"]
        errors = {status for status in responses if status >= "400"}
        assert "401" in errors, name
        takes_input = "{" in name or "requestBody" in operation or operation.get("parameters")
        # An operation with nothing to refuse but credentials (the model list) has 401 alone.
        assert len(errors) >= 2 or not takes_input, name
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
    assert "`not_latest_answer`" not in str(regenerate)
    assert "`message_finished`" in cancel["409"]["description"]
    for responses in (regenerate, cancel):
        assert "`not_an_assistant_message`" in responses["400"]["description"]
    for responses in (send, regenerate):
        assert "`overloaded`" in responses["503"]["description"]
        for status in ("429", "503"):
            assert responses[status]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    history = paths["/api/v1/conversations/{conversation_id}/messages/"]["get"]["responses"]
    for responses in (cancel, history):  # they start no answer: only the database's 503
        assert "`database_unavailable`" in responses["503"]["description"]
        assert "`overloaded`" not in responses["503"]["description"]


def test_every_operation_documents_the_database_503(schema):
    """Any view whose database connection fails under it answers 503 `database_unavailable`
    with Retry-After (chatsite/middleware.py): every operation says so."""
    for name, operation in operations(schema):
        response = operation["responses"]["503"]
        assert "`database_unavailable`" in response["description"], name
        assert response["headers"]["Retry-After"]["schema"] == {"type": "integer"}, name


def test_component_names_read_as_the_things_they_are(schema):
    """Outputs are named for what they are, enums for what they list, the conversation page
    `PaginatedConversationList`; no `Patched` copy of a component that is the same."""
    components = schema["components"]["schemas"]
    assert {
        "Conversation",
        "ConversationInput",
        "Message",
        "MessageRole",
        "MessageStatus",
        "PaginatedConversationList",
        "Error",
    } <= set(components)
    for name in components:
        assert not name.endswith(("Output", "Request")), name
        assert name not in ("RoleEnum", "StatusEnum"), name
        if name.startswith("Patched"):
            assert components[name] != components.get(name.removeprefix("Patched")), name
    patch = schema["paths"]["/api/v1/conversations/{conversation_id}/"]["patch"]
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ConversationInput"}
    role = components["Message"]["properties"]["role"]
    assert {"$ref": "#/components/schemas/MessageRole"} in role.get("allOf", [role])


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
        ("ConversationInput", "title", ConversationInputSerializer, True),
        ("MessageSendInput", "content", MessageListCreateApi.InputSerializer, False),
        ("MessageEditInput", "content", MessageEditInputSerializer, False),
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
            if "allOf" in field_schema:  # an enum (the model): its values are all there is
                enum = component(schema, field_schema["allOf"][0]["$ref"])
                assert enum["type"] == "string", (name, field)
                assert all(value.strip() and "\x00" not in value for value in enum["enum"])
                continue
            variants = field_schema.get("oneOf") or [field_schema]
            if variants[0]["type"] == "boolean":  # pinned, archived
                continue
            assert variants[0]["type"] == "string", (name, field)
            if variants[0].get("format") == "uuid":
                continue  # the format says what is accepted (a send's `parent`)
            assert "pattern" in variants[0], (name, field)
            assert not re.fullmatch(variants[0]["pattern"], "a\x00b"), (name, field)


# --- the event stream ------------------------------------------------------------------

STREAM = "/stream/conversations/{conversation_id}/"


def test_the_stream_is_documented_with_its_parameters_and_refusals(schema):
    """`GET /stream/conversations/{conversation_id}/` is in the schema: a `text/event-stream`
    200 of `StreamEvent`s, its `token` and `last_event_id` query parameters and the
    `Last-Event-ID` header, and each refusal with its code and the one error body."""
    conversation_id = "0b4f5a2e-8f7a-4d7c-9d55-2d8c9c7f0a11"
    assert STREAM.format(conversation_id=conversation_id) == reverse(
        "conversation-stream", kwargs={"conversation_id": conversation_id}
    )
    operation = schema["paths"][STREAM]["get"]
    assert set(schema["paths"][STREAM]) == {"get"}
    ok = operation["responses"]["200"]["content"]
    assert ok == {"text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}}}
    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert set(parameters) == {
        ("path", "conversation_id"),
        ("query", "token"),
        ("query", "last_event_id"),
        ("header", "Last-Event-ID"),
    }
    codes = {
        "400": "`invalid_last_event_id`",
        "401": "`stream_token_invalid`",
        "404": "`not_found`",
        "429": "`too_many_streams`",
        "503": "`database_unavailable`",
    }
    for status, code in codes.items():
        response = operation["responses"][status]
        assert code in response["description"], status
        assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}
    for status in ("429", "503"):
        assert "Retry-After" in operation["responses"][status]["headers"]
    assert "`unavailable`" in operation["responses"]["503"]["description"]
    # Its own codes, not the API's (the stream does not read JWTs).
    assert "token_not_valid" not in operation["responses"]["401"]["description"]


def _sent_event_names() -> set[str]:
    """The event names chat/relay.py and chat/streaming.py write (`sse.event("name", ...)`)."""
    from chat import relay, streaming

    source = inspect.getsource(relay) + inspect.getsource(streaming)
    return set(re.findall(r'sse\.event\(\s*"(\w+)"', source))


def test_each_event_the_stream_sends_has_a_component(schema):
    """`StreamEvent` is one of a component per event the code sends, chosen by `event`."""
    components = schema["components"]["schemas"]
    stream_event = components["StreamEvent"]
    mapping = stream_event["discriminator"]["mapping"]
    assert set(mapping) == _sent_event_names()
    assert {"MessageStartEvent", "DeltaEvent", "MessageEndEvent", "ErrorEvent"} <= {
        ref.rsplit("/", 1)[1] for ref in mapping.values()
    }
    for name, ref in mapping.items():
        event = components[ref.rsplit("/", 1)[1]]
        assert event["properties"]["event"]["enum"] == [name]
        assert {"$ref": ref} in stream_event["oneOf"]


def test_event_payloads_match_their_components(schema):
    """What chat/events.py builds (and the relay's own payloads) validates against each
    event's `data`, and the resume positions against each `id` pattern."""
    import jsonschema

    from chat import events, relay
    from tests.chat.test_api import _nullable_as_json_schema

    components = schema["components"]["schemas"]
    message_id = "0b4f5a2e-8f7a-4d7c-9d55-2d8c9c7f0a11"

    def check(component: str, data: dict, event_id: str | None = None) -> None:
        event = _nullable_as_json_schema(components[component])
        jsonschema.validate(data, event["properties"]["data"])
        if event_id is None:
            assert "id" not in event["properties"], component
        else:
            assert re.fullmatch(event["properties"]["id"]["pattern"], event_id), component

    check(
        "MessageStartEvent",
        events.message_start_data(
            message_id=message_id,
            role="assistant",
            status="pending",
            created_at="2026-01-01T00:00:00Z",
            context_omitted_turns=2,
        ),
        events.event_id(message_id, 0),
    )
    check("DeltaEvent", {"message_id": message_id, "text": "Hi"}, events.event_id(message_id, 2))
    for stop_reason, tokens in (("end_turn", 5), ("", None)):
        end = events.message_end_data(
            message_id=message_id,
            status="complete",
            stop_reason=stop_reason,
            input_tokens=tokens,
            output_tokens=tokens,
        )
        check("MessageEndEvent", end, events.event_id(message_id, None))
    for code in events.RunError:
        check("ErrorEvent", events.run_error_data(message_id=message_id, code=code))
    check("ErrorEvent", events.auth_revoked_data())
    check("ConversationDeletedEvent", {"conversation_id": message_id})
    reasons = set(re.findall(r'_reset\(\s*"(\w+)"', inspect.getsource(relay)))
    assert reasons == set(
        components["ResetEvent"]["properties"]["data"]["properties"]["reason"]["enum"]
    )
    for reason in reasons:
        check("ResetEvent", {"reason": reason, "message": "Sent again in full."})


def test_the_resume_pattern_matches_the_positions_the_server_issues(schema):
    """`last_event_id` / `Last-Event-ID` accept every position the stream issues and the
    server parses, and refuse what it refuses."""
    from chat.errors import InvalidResumePosition
    from chat.events import ResumePosition, event_id

    parameters = schema["paths"][STREAM]["get"]["parameters"]
    (pattern,) = {
        p["schema"]["pattern"]
        for p in parameters
        if p["name"] != "conversation_id" and "pattern" in p["schema"]
    }
    message_id = "0b4f5a2e-8f7a-4d7c-9d55-2d8c9c7f0a11"
    for offset in (0, 1, 12345, None):
        position = event_id(message_id, offset)
        assert re.fullmatch(pattern, position)
        ResumePosition.parse(position)
    for bad in ("", "x", f"{message_id}", f"{message_id}:-1", f"{message_id}:x", "1:2"):
        assert not re.fullmatch(pattern, bad)
        with pytest.raises(InvalidResumePosition):
            ResumePosition.parse(bad)


def _subclasses(cls) -> set[type]:
    return {cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))}


def test_the_error_component_declares_every_field_an_error_body_carries(schema):
    """Every domain error's body (chat/errors.py) and the handler's validation and throttle
    bodies use only the `Error` component's fields, with `code` and `message` required."""
    from chat.errors import ChatError, TokenBudgetExhausted

    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}
    declared = set(error["properties"])
    bodies = [
        TokenBudgetExhausted(retry_after=60, resets_at="2026-01-02T00:00:00Z").body,
        {"code": "invalid", "message": "m", "errors": {}, "error_codes": {}},
        {"code": "throttled", "message": "m", "retry_after": 3},
    ]
    for cls in _subclasses(ChatError) - {TokenBudgetExhausted}:
        bodies.append(cls().body)
    for body in bodies:
        assert set(body) <= declared, body
    assert error["properties"]["resets_at"]["format"] == "date-time"
