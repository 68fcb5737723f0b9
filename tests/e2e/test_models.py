"""The model picker and usage end to end: a real daphne process with `AnthropicProvider` ->
real SDK -> the fake Anthropic server (whose `/_fake/stats` shows the request it received),
and the offline demo model."""

from __future__ import annotations

import httpx
import pytest

from chat.context import estimate_tokens
from chat.models import Message

from .client import fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)


def upstream_request(fake_anthropic) -> dict:
    return httpx.get(f"{fake_anthropic.url}/_fake/stats", timeout=5).json()["last_request"]


def test_with_a_key_claudes_models_are_offered_and_the_chosen_one_is_asked(
    claude_api, fake_anthropic
):
    """With an API key the site offers Claude's models (Sonnet the default); a conversation
    set to another is answered by that model: the upstream request names it and asks for its
    `max_tokens`, and the answer records it in the stream's `message_start` and the API."""
    models = claude_api.http.get("/api/v1/models/").json()
    assert models["default"] == "claude-sonnet-4-5"
    ids = [model["id"] for model in models["results"]]
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= set(ids)

    conversation = claude_api.create_conversation()
    assert conversation["model"] == "claude-sonnet-4-5"
    refused = claude_api.http.patch(
        f"/api/v1/conversations/{conversation['id']}/", json={"model": "demo"}
    )
    assert refused.status_code == 400
    assert "claude-haiku-4-5" in refused.json()["errors"]["model"][0]
    changed = claude_api.http.patch(
        f"/api/v1/conversations/{conversation['id']}/", json={"model": "claude-haiku-4-5"}
    )
    assert changed.json()["model"] == "claude-haiku-4-5"

    _, read = claude_api.send_and_read(conversation["id"], f"Hi {fake(tokens=5, tps=0)}")
    sent = upstream_request(fake_anthropic)
    assert (sent["model"], sent["max_tokens"]) == ("claude-haiku-4-5", 4096)
    (start,) = read.of("message_start")
    assert start[1]["message"]["model"] == "claude-haiku-4-5"
    (end,) = read.of("message_end")
    assert end[1]["usage"]["estimated"] is False
    history = claude_api.http.get(f"/api/v1/conversations/{conversation['id']}/messages/")
    assert [m["model"] for m in history.json()["results"]] == ["", "claude-haiku-4-5"]


def test_an_answer_stopped_mid_stream_stores_its_usage_and_the_totals_count_it(claude_api):
    """Stopped mid-stream (Claude sends its output count only at the end), the answer stores
    the input the model reported and its output estimated from the text that streamed, says
    they are estimates — in the database, the API and the stream's `message_end` — and the
    conversation's totals include them."""
    conversation = claude_api.create_conversation()
    with claude_api.stream(conversation["id"]) as stream:
        sent = claude_api.send(conversation["id"], f"Long one {fake(tokens=300, tps=30)}")
        answer_id = sent["assistant_message"]["id"]
        stream.read(max_events=4)  # message_start and three deltas: it is streaming
        stopped = claude_api.http.post(f"/api/v1/messages/{answer_id}/cancel/")
        assert stopped.status_code == 200, stopped.text
        read = stream.read(until_end_of=answer_id)

    message = wait_for_final(answer_id)
    assert message.status == Message.Status.CANCELLED
    assert message.content
    assert message.input_tokens == 3  # the fake counts the words it was sent
    assert message.output_tokens == estimate_tokens(message.content) > 0
    assert message.usage_estimated is True
    assert message.model == "claude-sonnet-4-5"
    body = stopped.json()
    assert (body["output_tokens"], body["usage_estimated"]) == (message.output_tokens, True)
    end = read.of("message_end")[-1][1]
    assert end["usage"] == {
        "input_tokens": 3,
        "output_tokens": message.output_tokens,
        "estimated": True,
    }
    totals = claude_api.http.get(f"/api/v1/conversations/{conversation['id']}/").json()
    assert (totals["input_tokens"], totals["output_tokens"]) == (3, message.output_tokens)


def test_the_demo_models_answers_say_demo_model(demo_api):
    """Without a key the demo model is the one model, and its answers record it (not a
    Claude model id)."""
    assert [m["label"] for m in demo_api.http.get("/api/v1/models/").json()["results"]] == [
        "demo model"
    ]
    conversation = demo_api.create_conversation()
    assert conversation["model"] == "demo"
    answer_id, read = demo_api.send_and_read(conversation["id"], "Hello")
    assert read.of("message_start")[0][1]["message"]["model"] == "demo"
    assert wait_for_final(answer_id).model == "demo"
