"""The fake Anthropic server, driven by the real ``anthropic`` SDK.

These tests pin down the contract the rest of the project relies on: that the
official SDK parses the fake's stream exactly as it parses the real API's, and which
SDK exception each injected fault surfaces as (the provider translates those).

The server runs in a subprocess, as it does for the site and the benchmarks. No test
here touches the database. pytest-asyncio is not installed: each test drives its
coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anthropic
import httpx2
import pytest
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from chat.fake_anthropic import count_input_tokens, generated_deltas, parse_directives

MODEL = "claude-fake-1"
T = TypeVar("T")


# ------------------------------------------------------------------------- fixture


@pytest.fixture
def fake_anthropic_url(fake_anthropic) -> str:
    """The session's fake server (tests/conftest.py), started as `python -m chat.fake_anthropic`."""
    return fake_anthropic.url


# ------------------------------------------------------------------------- helpers


def with_client(url: str, fn: Callable[[anthropic.AsyncAnthropic], Awaitable[T]], **kw: Any) -> T:
    """Run ``fn(client)`` in a fresh event loop with a client made (and closed) inside it."""

    async def go() -> T:
        async with client(url, **kw) as c:
            return await fn(c)

    return asyncio.run(go())


def fake(**directives: Any) -> str:
    """``fake(tokens=3, stamp=True)`` -> ``[[fake:tokens=3,stamp]]``."""
    items = [key if value is True else f"{key}={value}" for key, value in directives.items()]
    return "[[fake:" + ",".join(items) + "]]"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def client(url: str, *, max_retries: int = 0, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="test-key", base_url=url, max_retries=max_retries, **kwargs
    )


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def stream_text(
    c: anthropic.AsyncAnthropic, messages: list[dict[str, Any]], max_tokens: int = 1024
) -> tuple[list[str], anthropic.types.Message]:
    async with c.messages.stream(model=MODEL, max_tokens=max_tokens, messages=messages) as s:
        chunks = [text async for text in s.text_stream]
        return chunks, await s.get_final_message()


async def stream_until_error(
    c: anthropic.AsyncAnthropic, messages: list[dict[str, Any]]
) -> tuple[list[str], BaseException]:
    chunks: list[str] = []
    try:
        async with c.messages.stream(model=MODEL, max_tokens=1024, messages=messages) as s:
            async for text in s.text_stream:
                chunks.append(text)
    except Exception as exc:
        return chunks, exc
    raise AssertionError(f"stream ended without an error after {chunks!r}")


def stats(url: str) -> dict[str, Any]:
    return httpx2.get(f"{url}/_fake/stats").json()


# ------------------------------------------------------------------ happy paths


def test_text_stream_and_final_message(fake_anthropic_url: str) -> None:
    messages = user(f"Say hello please {fake(tokens=12, tps=0)}")
    chunks, final = with_client(fake_anthropic_url, lambda c: stream_text(c, messages))
    expected = "".join(generated_deltas(12))
    assert chunks == list(generated_deltas(12))
    assert "".join(chunks) == expected
    assert final.content[0].type == "text"
    assert final.content[0].text == expected
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.id.startswith("msg_")
    assert final.usage.input_tokens == 4  # whitespace-split words, directive included
    assert final.usage.output_tokens == 12


def test_system_and_block_content_count_as_input(fake_anthropic_url: str) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        {"role": "assistant", "content": "four five"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "six"},
                {"type": "text", "text": f"seven {fake(tokens=2, tps=0)}"},
            ],
        },
    ]

    async def go(c: anthropic.AsyncAnthropic) -> anthropic.types.Message:
        async with c.messages.stream(
            model=MODEL, max_tokens=50, system="You are terse.", messages=messages
        ) as s:
            return await s.get_final_message()

    final = with_client(fake_anthropic_url, go)
    body = {"system": "You are terse.", "messages": messages}
    assert final.usage.input_tokens == count_input_tokens(body) == 3 + 8
    # The directive sat in a content block of the last user message, and applied.
    assert final.usage.output_tokens == 2


def test_generated_answer_looks_like_markdown() -> None:
    deltas = generated_deltas(50)
    assert len(deltas) == 50
    assert all(d.endswith((" ", "\n")) for d in deltas)
    text = "".join(deltas)
    assert "\n## " in text
    assert "\n- " in text
    assert "```python\n" in text
    assert generated_deltas(60)[:50] == deltas  # deterministic and prefix-stable


def test_create_stream_yields_typed_events_in_order(fake_anthropic_url: str) -> None:
    async def go(c: anthropic.AsyncAnthropic) -> list[Any]:
        stream = await c.messages.create(
            model=MODEL, max_tokens=100, messages=user(fake(tokens=3, tps=0)), stream=True
        )
        return [event async for event in stream]

    events = with_client(fake_anthropic_url, go)
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, block_start, *deltas, block_stop, message_delta, stop = events
    assert isinstance(start, RawMessageStartEvent)
    assert start.message.usage.output_tokens == 1
    assert start.message.content == []
    assert isinstance(block_start, RawContentBlockStartEvent)
    assert all(isinstance(d, RawContentBlockDeltaEvent) for d in deltas)
    assert [d.delta.text for d in deltas] == list(generated_deltas(3))
    assert isinstance(block_stop, RawContentBlockStopEvent)
    assert isinstance(message_delta, RawMessageDeltaEvent)
    assert message_delta.delta.stop_reason == "end_turn"
    assert message_delta.usage.output_tokens == 3
    assert isinstance(stop, RawMessageStopEvent)


def test_sse_wire_format(fake_anthropic_url: str) -> None:
    """The raw bytes, for consumers that parse SSE themselves."""
    body = {"model": MODEL, "max_tokens": 10, "stream": True, "messages": user(fake(tokens=1))}
    response = httpx2.post(
        f"{fake_anthropic_url}/v1/messages", json=body, headers={"x-api-key": "k"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    assert [b.split("\n")[0] for b in blocks[:-1]] == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
        "event: content_block_delta",
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ]
    assert blocks[2] == 'event: ping\ndata: {"type": "ping"}'
    assert all(b.split("\n")[1].startswith("data: {") for b in blocks[:-1])


def test_non_streaming_create(fake_anthropic_url: str) -> None:
    message = with_client(
        fake_anthropic_url,
        lambda c: c.messages.create(
            model=MODEL, max_tokens=100, messages=user(f"hi {fake(tokens=7, tps=0)}")
        ),
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].text == "".join(generated_deltas(7))
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 2
    assert message.usage.output_tokens == 7


def test_max_tokens_cuts_the_answer(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=10, tps=0))
    chunks, final = with_client(
        fake_anthropic_url, lambda c: stream_text(c, messages, max_tokens=4)
    )
    assert chunks == list(generated_deltas(4))
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 4

    message = with_client(
        fake_anthropic_url,
        lambda c: c.messages.create(model=MODEL, max_tokens=4, messages=messages),
    )
    assert message.content[0].text == "".join(generated_deltas(4))
    assert message.stop_reason == "max_tokens"


TRICKY = (
    '<script>alert("x")</script>\n'
    "line two\r\nthree\n\n"
    "emoji 😀 family 👩‍👩‍👧 flag 🇫🇷\n"
    "separators \u2028 and \u2029 end\n"
    "quotes \" ' backslash \\ and data: event: lines\n"
    "tab\tdone"
)


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_text_directive_round_trips_exactly(fake_anthropic_url: str, chunk: int | None) -> None:
    directives: dict[str, Any] = {"text": b64(TRICKY), "tps": 0}
    if chunk is not None:
        directives["chunk"] = chunk
    messages = user(f"echo {fake(**directives)}")
    chunks, final = with_client(fake_anthropic_url, lambda c: stream_text(c, messages))
    size = chunk or 4
    assert "".join(chunks) == TRICKY
    assert final.content[0].text == TRICKY
    # Deltas of `size` characters, so tags, CRLF and emoji sequences straddle deltas.
    assert len(chunks) == -(-len(TRICKY) // size)
    assert chunks[0] == TRICKY[:size]
    assert final.usage.output_tokens == len(chunks)


def test_stamp_deltas_carry_send_time(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=3, tps=0, stamp=True))
    before = time.time()
    chunks, _ = with_client(fake_anthropic_url, lambda c: stream_text(c, messages))
    after = time.time()
    assert len(chunks) == 3
    for seq, text in enumerate(chunks, start=1):
        match = re.fullmatch(r"(\d+)@(\d+\.\d{6}) ", text)
        assert match, text
        assert int(match.group(1)) == seq
        assert before - 0.01 <= float(match.group(2)) <= after + 0.01


def test_pacing_follows_tokens_per_second(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=10, tps=50))
    started = time.monotonic()
    chunks, _ = with_client(fake_anthropic_url, lambda c: stream_text(c, messages))
    elapsed = time.monotonic() - started
    assert len(chunks) == 10
    assert 0.18 <= elapsed < 1.5  # 10 deltas at 50/s is ~0.2 s


# ------------------------------------------------------------------ status errors


def test_529_raises_overloaded_error(fake_anthropic_url: str) -> None:
    with pytest.raises(anthropic.OverloadedError) as info:
        with_client(fake_anthropic_url, lambda c: stream_text(c, user(fake(status=529))))
    assert info.value.status_code == 529
    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert info.value.response.headers["request-id"].startswith("req_")
    assert "retry-after" in info.value.response.headers


def test_529_with_fail_times_succeeds_on_retry(fake_anthropic_url: str) -> None:
    # `id` keeps this directive string (the fail_times key) unique to this test.
    directive = fake(status=529, fail_times=1, retry_after=0.01, tokens=2, tps=0, id=uuid.uuid4())
    before = stats(fake_anthropic_url)["requests"]
    chunks, final = with_client(
        fake_anthropic_url, lambda c: stream_text(c, user(directive)), max_retries=1
    )
    assert chunks == list(generated_deltas(2))
    assert final.stop_reason == "end_turn"
    assert stats(fake_anthropic_url)["requests"] == before + 2  # one 529, one retry


def test_429_raises_rate_limit_error_with_retry_after(fake_anthropic_url: str) -> None:
    messages = user(fake(status=429, retry_after=7))
    with pytest.raises(anthropic.RateLimitError) as info:
        with_client(fake_anthropic_url, lambda c: stream_text(c, messages))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_500_raises_internal_server_error(fake_anthropic_url: str) -> None:
    messages = user(fake(status=500))
    with pytest.raises(anthropic.InternalServerError) as info:
        with_client(
            fake_anthropic_url,
            lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=messages),
        )
    assert info.value.status_code == 500
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_missing_api_key_is_401(fake_anthropic_url: str) -> None:
    # SDK 2.x sends `Authorization: Bearer <api_key>`; omitting it leaves no credentials.
    with pytest.raises(anthropic.AuthenticationError) as info:
        with_client(
            fake_anthropic_url,
            lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=user("hi")),
            default_headers={"Authorization": anthropic.omit},
        )
    assert info.value.status_code == 401

    response = httpx2.post(
        f"{fake_anthropic_url}/v1/messages",
        json={"model": MODEL, "max_tokens": 5, "messages": user("hi")},
    )
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "max_tokens": 5, "messages": []}',
        b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "[[fake:x]]"}]}',
    ],
    ids=[
        "bad-json",
        "no-model",
        "no-max-tokens",
        "zero-max-tokens",
        "no-messages",
        "bad-directive",
    ],
)
def test_invalid_requests_are_400(fake_anthropic_url: str, body: bytes) -> None:
    response = httpx2.post(
        f"{fake_anthropic_url}/v1/messages",
        content=body,
        headers={"x-api-key": "k", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_bad_request_through_the_sdk(fake_anthropic_url: str) -> None:
    with pytest.raises(anthropic.BadRequestError):
        with_client(
            fake_anthropic_url,
            lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=[]),
        )


# -------------------------------------------------------------- mid-stream faults


def test_error_after_raises_api_status_error(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=10, tps=0, error_after=3))
    chunks, exc = with_client(fake_anthropic_url, lambda c: stream_until_error(c, messages))
    assert chunks == list(generated_deltas(3))
    # The HTTP status was 200, so the SDK cannot map it to OverloadedError: it is a
    # plain APIStatusError and only the body says what happened.
    assert type(exc) is anthropic.APIStatusError
    assert exc.status_code == 200
    assert exc.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_disconnect_after_raises_remote_protocol_error(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=10, tps=0, disconnect_after=3))
    chunks, exc = with_client(fake_anthropic_url, lambda c: stream_until_error(c, messages))
    assert chunks == list(generated_deltas(3))
    # Mid-body transport errors are not wrapped by the SDK: the raw httpx2 error escapes.
    assert isinstance(exc, httpx2.RemoteProtocolError)
    assert isinstance(exc, httpx2.TransportError)
    assert not isinstance(exc, anthropic.APIError)
    assert "incomplete chunked read" in str(exc)


def test_stall_after_raises_read_timeout(fake_anthropic_url: str) -> None:
    messages = user(fake(tokens=10, tps=0, stall_after=2))
    started = time.monotonic()
    chunks, exc = with_client(
        fake_anthropic_url,
        lambda c: stream_until_error(c, messages),
        timeout=anthropic.Timeout(5.0, read=0.5),
    )
    assert time.monotonic() - started < 3
    assert chunks == list(generated_deltas(2))
    # Raised while reading the body, after the SDK returned: raw httpx2, not APITimeoutError.
    assert isinstance(exc, httpx2.ReadTimeout)
    assert not isinstance(exc, anthropic.APIError)


def test_stall_before_response_is_api_timeout_error(fake_anthropic_url: str) -> None:
    """Non-streaming: the timeout hits before any response, so the SDK wraps it."""
    messages = user(fake(tps=0, stall_after=0))
    with pytest.raises(anthropic.APITimeoutError) as info:
        with_client(
            fake_anthropic_url,
            lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=messages),
            timeout=anthropic.Timeout(5.0, read=0.5),
        )
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)


# ------------------------------------------------------------------ observability


@pytest.mark.parametrize(
    "directive",
    [fake(tokens=1000, tps=20), fake(tokens=1000, tps=0, stall_after=2)],
    ids=["streaming", "stalled"],
)
def test_stats_count_client_disconnect_after_cancel(
    fake_anthropic_url: str, directive: str
) -> None:
    url = fake_anthropic_url

    async def go(c: anthropic.AsyncAnthropic) -> float:
        before = await asyncio.to_thread(stats, url)
        got_two = asyncio.Event()

        async def consume() -> None:
            messages = user(directive)
            async with c.messages.stream(model=MODEL, max_tokens=2000, messages=messages) as s:
                count = 0
                async for _ in s.text_stream:
                    count += 1
                    if count == 2:
                        got_two.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_two.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.monotonic()

        # The fake notices the closed connection and counts it, promptly.
        while time.monotonic() - cancelled_at < 1.0:
            now = await asyncio.to_thread(stats, url)
            if (
                now["client_disconnects"] == before["client_disconnects"] + 1
                and now["active_streams"] == before["active_streams"]
            ):
                return time.monotonic() - cancelled_at
            await asyncio.sleep(0.02)
        raise AssertionError(f"fake did not see the client leave within 1 s: {now}")

    elapsed = with_client(url, go)
    assert elapsed < 1.0
    after = stats(url)
    assert after["last_request"]["messages"] == user(directive)
    assert after["last_request"]["stream"] is True


def test_stats_and_reset(fake_anthropic_url: str) -> None:
    url = fake_anthropic_url
    messages = user(fake(tokens=2, tps=0))
    with_client(url, lambda c: stream_text(c, messages))
    now = stats(url)
    assert now["requests"] >= 1
    assert now["streams_started"] >= 1
    assert now["streams_completed"] >= 1
    assert now["active_streams"] == 0

    reset = httpx2.post(f"{url}/_fake/reset").json()
    assert reset == {
        "requests": 0,
        "streams_started": 0,
        "streams_completed": 0,
        "client_disconnects": 0,
        "active_streams": 0,
        "last_request": None,
    }
    with_client(url, lambda c: stream_text(c, messages))
    now = stats(url)
    assert (now["requests"], now["streams_started"], now["streams_completed"]) == (1, 1, 1)
    assert now["last_request"]["messages"] == messages


# ------------------------------------------------------------------------ parsing


def test_parse_directives() -> None:
    text_b64 = b64("hé")
    key, overrides = parse_directives(
        f"hello [[fake:tokens=5,tps=2.5,stamp]] and [[fake:text={text_b64},chunk=1,id=x]]"
    )
    assert key == f"tokens=5,tps=2.5,stamp,text={text_b64},chunk=1,id=x"
    assert overrides == {
        "tokens": 5,
        "tokens_per_second": 2.5,
        "stamp": True,
        "text": "hé",
        "chunk": 1,
    }
    assert parse_directives("no directive here") == ("", {})
