"""End to end over real HTTP: a real daphne process, the API, and the SSE stream."""

from __future__ import annotations

import time

import httpx
import pytest

from chat.models import Message

from .client import ChatApi, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)


def send_and_read(api, content: str):
    conv = api.create_conversation()
    assistant_id, read = api.send_and_read(conv["id"], content)
    return conv, assistant_id, read


def test_demo_answer_streams_and_matches_the_stored_message(demo_api):
    """Demo provider: the streamed text equals the stored content, status `complete`."""
    _, assistant_id, read = send_and_read(demo_api, "Hello demo")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert read.text(assistant_id) == message.content
    assert "Hello demo" in message.content
    end = read.of("message_end")[-1][1]
    assert end["status"] == "complete"
    assert end["usage"]["output_tokens"] == message.output_tokens > 0


def test_claude_answer_streams_through_the_real_sdk(claude_api):
    """AnthropicProvider -> real SDK -> fake Anthropic: streamed text equals stored text."""
    answer = "Hello **there**!\n\n```py\nprint('<b>hi</b>')\n```\nU+2028:\u2028 done 🚀"
    _, assistant_id, read = send_and_read(claude_api, f"Hi {fake(text=answer, tps=20)}")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert message.content == answer
    assert read.text(assistant_id) == answer
    assert len(read.of("delta")) > 3  # it really streamed, in pieces
    end = read.of("message_end")[-1][1]
    assert end["stop_reason"] == "end_turn"
    assert end["usage"]["input_tokens"] == message.input_tokens > 0
    assert end["usage"]["output_tokens"] == message.output_tokens > 0


def test_stream_response_headers_and_framing(claude_api):
    """text/event-stream, no-cache, no proxy buffering, never gzipped; `retry:` comes first."""
    conv = claude_api.create_conversation()
    url = claude_api.stream_url(conv["id"])
    with httpx.stream(
        "GET", claude_api.base_url + url, headers={"Accept-Encoding": "gzip"}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        first = next(response.iter_lines())
        assert first.startswith("retry: ")


def test_upstream_529_is_retried_then_fails_with_an_error_event(claude_api, fake_anthropic):
    """529 before streaming: the SDK retries a bounded number of times, then `failed`."""
    httpx.post(f"{fake_anthropic.url}/_fake/reset")
    _, assistant_id, read = send_and_read(claude_api, f"Hi {fake(status=529, retry_after=0.2)}")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.FAILED
    assert message.content == ""
    assert message.error_code == "upstream_overloaded"
    stats = httpx.get(f"{fake_anthropic.url}/_fake/stats").json()
    assert stats["requests"] == 3  # one try and ANTHROPIC_MAX_RETRIES=2 retries
    error = read.of("error")[-1][1]
    assert error["code"] == "upstream_overloaded"
    assert error["retryable"] is True
    assert read.of("message_end")[-1][1]["status"] == "failed"


def test_overloaded_error_mid_stream_keeps_partial_text(claude_api):
    """An `error` event after 3 deltas: `interrupted`, partial text kept, retryable error."""
    text = "aaaabbbbccccddddeeee"
    _, assistant_id, read = send_and_read(
        claude_api, f"Hi {fake(text=text, error_after=3, tps=100)}"
    )
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.INTERRUPTED
    assert message.content == "aaaabbbbcccc"
    assert read.text(assistant_id) == message.content
    error = read.of("error")[-1][1]
    assert (error["code"], error["retryable"]) == ("upstream_overloaded", True)
    assert read.of("message_end")[-1][1]["status"] == "interrupted"


@pytest.mark.parametrize(
    ("directive", "code"),
    [({"disconnect_after": 3}, "upstream_disconnected"), ({"stall_after": 3}, "upstream_stalled")],
)
def test_dropped_or_stalled_upstream_is_interrupted_never_complete(claude_api, directive, code):
    """A connection that drops, or stalls past the read timeout, ends `interrupted`."""
    _, assistant_id, read = send_and_read(claude_api, f"Hi {fake(tps=100, **directive)}")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.INTERRUPTED
    assert message.error_code == code
    assert message.content
    assert read.text(assistant_id) == message.content
    assert read.of("message_end")[-1][1]["status"] == "interrupted"


def test_client_disconnect_does_not_stop_the_run(claude_api):
    """Closing the stream mid-answer: the run goes on and stores the full text."""
    text = "x" * 4 * 30
    conv = claude_api.create_conversation()
    with claude_api.stream(conv["id"]) as stream:
        sent = claude_api.send(conv["id"], f"Hi {fake(text=text, tps=30)}")
        read = stream.read(max_events=3)  # start + 2 deltas, then hang up
    assert read.of("delta")
    message = wait_for_final(sent["assistant_message"]["id"])
    assert message.status == Message.Status.COMPLETE
    assert message.content == text


def test_joining_mid_answer_gets_start_and_all_text_so_far(claude_api):
    """A connection opened mid-answer: message_start, one delta with all text so far, then live."""
    text = "".join(f"w{i:02d} " for i in range(40))
    conv = claude_api.create_conversation()
    sent = claude_api.send(conv["id"], f"Hi {fake(text=text, tps=40)}")
    assistant_id = sent["assistant_message"]["id"]
    time.sleep(0.5)
    with claude_api.stream(conv["id"]) as stream:
        read = stream.read(until_end_of=assistant_id)
    names = [e[0] for e in read.events]
    assert names[:2] == ["message_start", "delta"]
    assert len(read.events[1][1]["text"]) > 4  # more than one upstream delta, coalesced
    assert read.text(assistant_id) == text == wait_for_final(assistant_id).content


def test_reconnect_with_last_event_id_resumes_exactly(claude_api):
    """Dropping the stream and reconnecting with the last id yields exactly the missing text."""
    text = "".join(f"t{i:02d} " for i in range(40))
    conv = claude_api.create_conversation()
    with claude_api.stream(conv["id"]) as stream:
        sent = claude_api.send(conv["id"], f"Hi {fake(text=text, tps=40)}")
        assistant_id = sent["assistant_message"]["id"]
        first = stream.read(max_events=4)
    last_id = first.events[-1][2]
    with claude_api.stream(conv["id"], last_event_id=last_id) as stream:
        second = stream.read(until_end_of=assistant_id)
    assert second.of("message_start") == []
    assert first.text(assistant_id) + second.text(assistant_id) == text


def test_stream_tokens_never_reach_the_access_log(claude_api, daphne_anthropic):
    """daphne's access log shows stream requests with the token redacted."""
    conv = claude_api.create_conversation()
    other = claude_api.create_conversation()
    token = claude_api.stream_url(conv["id"]).split("token=")[1]
    # A request is logged when its response completes: a refused stream is at once.
    url = f"{claude_api.base_url}/stream/conversations/{other['id']}/?token={token}&x=1"
    assert httpx.get(url, timeout=5).status_code == 401
    logged = f"/stream/conversations/{other['id']}/?token=[redacted]&x=1"
    deadline = time.monotonic() + 5
    # Django's own "Unauthorized" line names the path too, just before the access line.
    while time.monotonic() < deadline and logged not in daphne_anthropic.log.read_text():
        time.sleep(0.1)
    log = daphne_anthropic.log.read_text()
    assert logged in log
    assert token not in log


def test_refusals_are_plain_http_before_the_stream(claude_api, other_user, password):
    """Bad token → 401, someone else's conversation → 404: JSON, never a 200 stream."""
    conv = claude_api.create_conversation()
    base = claude_api.base_url
    bad = httpx.get(f"{base}/stream/conversations/{conv['id']}/?token=nope", timeout=5)
    assert bad.status_code == 401
    assert bad.json()["code"] == "stream_token_invalid"
    mallory = ChatApi(base, other_user.username, password)
    theirs = mallory.http.post(f"/api/v1/conversations/{conv['id']}/stream-token/")
    assert theirs.status_code == 404
