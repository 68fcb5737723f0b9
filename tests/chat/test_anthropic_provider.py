"""`AnthropicProvider` against the fake Anthropic server: what each upstream outcome becomes.

The provider reads the stream as raw Server-Sent Events through the SDK's
streaming response (see its docstring), so these tests hold its parsing to the
protocol: text deltas in order, usage and stop reason, and every way a stream
can fail, each a `ProviderError` with a stable code.
"""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest

from chat.fake_anthropic import generated_deltas
from chat.providers import ChatTurn, ProviderError, ProviderRequest, StreamEnd, TextDelta, Usage
from chat.providers.anthropic import AnthropicProvider, _sse_data
from tests.faultproxy import Fault, FaultProxy


def fake(**directives) -> str:
    items = [key if value is True else f"{key}={value}" for key, value in directives.items()]
    return "[[fake:" + ",".join(items) + "]]"


def run(
    url: str, text: str, *, max_retries: int = 0, **options
) -> tuple[list[str], StreamEnd | None, ProviderError | None]:
    """Stream one answer; returns (deltas, end, error)."""

    async def go():
        provider = AnthropicProvider(
            api_key="test-key", base_url=url, max_retries=max_retries, **options
        )
        request = ProviderRequest(model="claude-fake-1", messages=[ChatTurn("user", text)])
        deltas, end = [], None
        try:
            async for item in provider.stream(request):
                if isinstance(item, TextDelta):
                    deltas.append(item.text)
                elif isinstance(item, StreamEnd):
                    end = item
        except ProviderError as exc:
            return deltas, end, exc
        finally:
            await provider.aclose()
        return deltas, end, None

    return asyncio.run(go())


def test_text_usage_and_stop_reason(fake_anthropic) -> None:
    deltas, end, error = run(fake_anthropic.url, fake(tokens=12, tps=0) + " hello")
    assert error is None
    assert deltas == list(generated_deltas(12))
    assert end.stop_reason == "end_turn"
    assert end.output_tokens == 12
    assert end.input_tokens > 0


def test_text_with_line_breaks_and_unicode_round_trips(fake_anthropic) -> None:
    text = 'Line one\nline two\r\n"quoted" data: not a field\n\nemoji 🙂 and U+2028:\u2028end'
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    deltas, _, error = run(fake_anthropic.url, fake(text=encoded, chunk=3, tps=0))
    assert error is None
    assert "".join(deltas) == text


def test_max_tokens_stop_reason(fake_anthropic) -> None:
    async def go():
        provider = AnthropicProvider(api_key="k", base_url=fake_anthropic.url, max_retries=0)
        request = ProviderRequest(
            model="m", messages=[ChatTurn("user", fake(tokens=20, tps=0))], max_tokens=5
        )
        items = [item async for item in provider.stream(request)]
        await provider.aclose()
        return items

    items = asyncio.run(go())
    assert len([i for i in items if isinstance(i, TextDelta)]) == 5
    assert items[-1].stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("directives", "code", "retryable", "delivered"),
    [
        ({"error_after": 3}, "upstream_overloaded", True, 3),
        ({"disconnect_after": 3}, "upstream_disconnected", True, 3),
        ({"truncate_after": 4}, "upstream_disconnected", True, 4),
        ({"status": 529}, "upstream_overloaded", True, 0),
        ({"status": 429}, "upstream_rate_limited", True, 0),
        ({"status": 500}, "upstream_error", True, 0),
    ],
)
def test_upstream_failures_become_provider_errors(
    fake_anthropic, directives, code, retryable, delivered
) -> None:
    deltas, end, error = run(fake_anthropic.url, fake(tokens=10, tps=0, **directives))
    assert error is not None, "the failure must surface"
    assert (error.code, error.retryable) == (code, retryable)
    assert deltas == list(generated_deltas(10))[:delivered]
    assert end is None


def test_input_usage_is_reported_before_the_text_so_a_broken_stream_still_has_it(
    fake_anthropic,
) -> None:
    """The input tokens of the stream's `message_start` come out as a `Usage` before the
    first delta: a stream that then breaks has reported what its input cost."""

    async def go():
        provider = AnthropicProvider(api_key="k", base_url=fake_anthropic.url, max_retries=0)
        request = ProviderRequest(
            model="m", messages=[ChatTurn("user", fake(tokens=10, tps=0, error_after=2))]
        )
        items = []
        with pytest.raises(ProviderError):
            async for item in provider.stream(request):
                items.append(item)
        await provider.aclose()
        return items

    items = asyncio.run(go())
    assert isinstance(items[0], Usage)
    assert items[0].input_tokens > 0
    assert [type(i) for i in items[1:]] == [TextDelta, TextDelta]


def test_a_stall_mid_stream_is_upstream_stalled(fake_anthropic) -> None:
    deltas, _, error = run(
        fake_anthropic.url, fake(tokens=10, tps=0, stall_after=2), read_timeout=0.5
    )
    assert error is not None and error.code == "upstream_stalled"
    assert deltas == list(generated_deltas(2))


def test_a_stream_broken_before_its_first_text_is_started_again(fake_anthropic) -> None:
    """A reset right after `message_start` (the SDK's retries are over: the response
    began) on the first connection: the stream is started again and answers in full."""
    with FaultProxy(fake_anthropic.url, Fault.reset(b"event: message_start"), faulty=1) as proxy:
        deltas, end, error = run(proxy.url, fake(tokens=10, tps=0), max_retries=1)
    assert error is None
    assert deltas == list(generated_deltas(10))
    assert end.stop_reason == "end_turn"
    assert proxy.connections == 2


def test_retries_before_text_are_bounded_by_max_retries(fake_anthropic) -> None:
    """Every stream breaks before its first text: one try and `max_retries` more, then
    the break's error."""
    with FaultProxy(fake_anthropic.url, Fault.reset(b"event: message_start")) as proxy:
        deltas, _, error = run(proxy.url, fake(tokens=10, tps=0), max_retries=2)
    assert error is not None and error.code == "upstream_disconnected"
    assert deltas == []
    assert proxy.connections == 3


def test_an_error_event_before_any_text_is_retried(fake_anthropic) -> None:
    """A retryable `error` event before the first delta is retried like a 529 would be;
    one after text is not (see the parametrized failures above: `error_after=3`)."""
    httpx.post(f"{fake_anthropic.url}/_fake/reset")
    _, _, error = run(fake_anthropic.url, fake(tokens=10, tps=0, error_after=0), max_retries=1)
    assert error is not None and error.code == "upstream_overloaded"
    assert httpx.get(f"{fake_anthropic.url}/_fake/stats").json()["requests"] == 2


def test_a_body_that_closes_slowly_after_message_stop_is_complete(fake_anthropic) -> None:
    """Everything up to `message_stop` arrives, then the body's end is held for a minute:
    the answer is complete at once, not a stall once the read timeout passes."""
    fault = Fault.slow_close(b"event: message_stop", 60.0)
    with FaultProxy(fake_anthropic.url, fault) as proxy:
        deltas, end, error = run(proxy.url, fake(tokens=10, tps=0), read_timeout=30.0)
        assert time.monotonic() - proxy.faults_started[0] < 10
    assert error is None
    assert deltas == list(generated_deltas(10))
    assert end.stop_reason == "end_turn"


def test_unreachable_upstream(fake_anthropic) -> None:
    _, _, error = run("http://127.0.0.1:9", "hi", connect_timeout=1.0)
    assert error is not None and error.code == "upstream_unreachable"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk_size", [1, 2, 7, 1000])
def test_sse_data_parses_any_line_ending_across_any_chunking(newline, chunk_size) -> None:
    nl = newline
    wire = (
        b": comment" + nl
        + b"event: message_start" + nl
        + b'data: {"type": "a",' + nl
        + b'data:  "n": 1}' + nl
        + nl
        + b"id: 7" + nl
        + b"retry: 100" + nl
        + nl
        + b'data:{"type":"b","text":"x\xe2\x80\xa8y"}' + nl
        + nl
        + b'data: {"type":"c"}'  # the body ends without the blank line
    )  # fmt: skip

    async def chunks():
        for i in range(0, len(wire), chunk_size):
            yield wire[i : i + chunk_size]

    async def collect():
        return [event async for event in _sse_data(chunks())]

    assert asyncio.run(collect()) == [
        {"type": "a", "n": 1},
        {"type": "b", "text": "x\u2028y"},
        {"type": "c"},
    ]
