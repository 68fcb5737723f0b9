"""Schemathesis against the OpenAPI schema the app serves, over HTTP to a real daphne.

Every operation is run as Alice, with generated requests (valid and invalid) aimed at random
ids, at Alice's own objects and at Mallory's, and every response must pass Schemathesis's
checks: no server error, a documented status, a body and headers that match the schema,
valid data accepted, invalid data refused, no answer without credentials, 405 for methods
the schema does not list. Mallory's objects must be 404 for Alice, and stay untouched.
"""

from __future__ import annotations

import re

import httpx
import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from chat.models import Conversation, Message

from .client import ChatApi, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

# Bounded and derandomized, so CI runs the same cases every time, in about two minutes.
CONFIG = {
    "generation": {"max-examples": 15, "deterministic": True},
    "checks": {
        # 503 is a documented refusal (admission, shutdown) with Retry-After, not a crash.
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        # A message longer than the limit is refused with 413 (`content_too_long`).
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "415", "429"]
        },
    },
    "operations": [
        {
            # Stop and regenerate take no body: a valid request's id may name a user message,
            # which is the documented 400 `not_an_assistant_message`.
            "include-path-regex": "^/api/v1/messages/",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "503"]
                }
            },
        },
        {
            # A send's generated `parent` is a valid UUID naming no answer of the
            # conversation: the documented 400 `invalid_parent`.
            "include-name": ["POST /api/v1/conversations/{conversation_id}/messages/"],
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "503"]
                }
            },
        },
        {
            # The stream reads no JWT: as Alice (a bearer token), every request is refused
            # 401 `stream_token_invalid` before anything is looked up, as documented. (A
            # 200 would be an endless event stream.)
            "include-path-regex": "^/stream/",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["401"]}},
        },
        {
            # DRF's page-number pagination reads an empty `?page=` as the first page, where
            # the schema says an integer; the message list's cursor pages refuse bad queries.
            "include-name": ["GET /api/v1/conversations/"],
            "checks": {"negative_data_rejection": {"enabled": False}},
        },
    ],
}


def _served_schema() -> dict:
    """The schema exactly as `/api/v1/schema/` serves it (the server under test is checked
    to serve the same)."""
    response = Client(HTTP_HOST="127.0.0.1").get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


schema = schemathesis.openapi.from_dict(
    _served_schema(), config=schemathesis.Config.from_dict(CONFIG)
)

UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

# Real objects' ids, by path parameter, Alice's answer and conversation first. The `users`
# fixture fills these for each test: hooks cannot take fixtures.
ALICES: dict[str, list[str]] = {}
MALLORYS: dict[str, list[str]] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Aim each generated id at itself (a random UUID: 404) or at a real object, Alice's or
    Mallory's. An id that is not a UUID is a case of invalid data, and stays so."""
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *ALICES.get(name, ()), *MALLORYS.get(name, ())])
            if isinstance(value, str) and UUID.fullmatch(value)
            else st.just(value)
            for name, value in path_parameters.items()
        }
    )


@pytest.fixture(scope="module")
def server(start_daphne):
    """daphne with the demo model, and a send rate that lets the cases reach validation; it
    serves the schema the cases were generated from."""
    server = start_daphne(
        ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="400", CHAT_SEND_RATE="1000/min"
    )
    served = httpx.get(f"{server.url}/api/v1/schema/", params={"format": "json"})
    assert served.json() == _served_schema()
    return server


@pytest.fixture
def users(server, user, other_user, password):
    """Alice (who runs the operations) and Mallory, each with a conversation and one finished
    exchange in it; after the test, no answer is left running and Mallory's are untouched."""
    alice = ChatApi(server.url, user.username, password)
    mallory = ChatApi(server.url, other_user.username, password)
    for api, ids, title in ((alice, ALICES, "Alice's"), (mallory, MALLORYS, "Mallory's")):
        conversation = api.create_conversation(title=title)
        sent = api.send(conversation["id"], "Hello")
        wait_for_final(sent["assistant_message"]["id"])
        ids["conversation_id"] = [conversation["id"]]
        ids["message_id"] = [sent["assistant_message"]["id"], sent["user_message"]["id"]]
    mallorys_before = _state(MALLORYS["conversation_id"][0])
    yield alice
    # Sends and regenerations started answers (demo model); each must end, none stay running.
    for message in Message.objects.filter(status__in=Message.ACTIVE_STATUSES):
        wait_for_final(str(message.pk))
    assert _state(MALLORYS["conversation_id"][0]) == mallorys_before
    ALICES.clear()
    MALLORYS.clear()


def _state(conversation_id: str) -> tuple:
    conversation = Conversation.objects.get(pk=conversation_id)
    messages = conversation.messages.order_by("created_at").values_list("id", "status", "content")
    return conversation.title, conversation.updated_at, list(messages)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, users, server):
    """Every response passes Schemathesis's checks; Mallory's objects are 404 for Alice."""
    ids = case.path_parameters or {}
    if case.meta is not None and case.meta.phase.name.value == "coverage":
        # Coverage cases (boundary values of every field) are made before any object
        # exists: aim them at Alice's objects, so that they reach validation.
        for name, value in ids.items():
            if isinstance(value, str) and UUID.fullmatch(value):
                case.path_parameters[name] = ALICES[name][0]
    response = case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": users.http.headers["Authorization"]},
        timeout=30,
    )
    if any(value in MALLORYS.get(name, ()) for name, value in ids.items()):
        # Refusals that come before any lookup (throttling, admission, the stream's token
        # check) reveal nothing.
        assert response.status_code in (401, 404, 429, 503), response.text
