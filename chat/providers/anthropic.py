"""Claude through the official `anthropic` SDK.

The SDK's exceptions stop here: everything that can go wrong upstream, before
or during the stream, leaves this module as a `ProviderError`.

How the stream is read, and why (each measured with `bench/`, see the README):

* Through the SDK's aiohttp transport (`anthropic.DefaultAioHttpClient`), not
  its default httpx one: httpx's pool scans every pooled connection on each
  request, and reading a stream through it costs more CPU per event.
* As raw Server-Sent Events (`with_streaming_response`): the SDK still builds
  the request, authenticates, retries failed connects and 429/5xx answers, and
  raises its typed errors for a failed status; but the events themselves are
  read here with one `json.loads` each, not built into typed model objects.
  So the wire details below are ours to get right (and the fake Anthropic
  server's tests hold them to the protocol):

  - an `error` event mid-stream (HTTP status 200) ends the answer with that
    error's type and message;
  - a stream that ends without `message_stop` was cut short;
  - a connection that drops or stalls mid-stream raises the transport's own
    exceptions (`httpx2.TransportError` subclasses), not `APIConnectionError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import anthropic
import httpx2  # the SDK's transport layer; its exceptions surface mid-stream

from .base import ProviderError, ProviderRequest, StreamEnd, TextDelta, Usage

# Upstream error types (error.type in the body) that a later retry may fix.
_RETRYABLE_TYPES = {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}


class AnthropicProvider:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 2,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 10_000,
    ) -> None:
        self.options = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": anthropic.Timeout(read_timeout, connect=connect_timeout),
        }
        # One upstream connection per answer being generated: the SDK's default
        # cap (1,000) would queue answers beyond it, so the cap is a setting.
        self.limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=min(max_connections, 100)
        )
        self._client: anthropic.AsyncAnthropic | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        # aiohttp sessions belong to one event loop. A server has one loop for
        # its life; tests run several in turn.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = anthropic.AsyncAnthropic(
                **self.options, http_client=anthropic.DefaultAioHttpClient(limits=self.limits)
            )
        return self._client

    async def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[TextDelta | Usage | StreamEnd]:
        input_tokens = output_tokens = None
        stop_reason = "end_turn"
        stopped = False
        try:
            # `async with` closes the HTTP response on every exit, cancellation
            # included, so the upstream sees us leave and stops generating.
            async with self.client.messages.with_streaming_response.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=request.system or anthropic.omit,
                messages=[{"role": t.role, "content": t.content} for t in request.messages],
                stream=True,
            ) as response:
                async for event in _sse_data(response.iter_bytes()):
                    kind = event.get("type")
                    if kind == "content_block_delta":
                        delta = event["delta"]
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield TextDelta(delta["text"])
                    elif kind == "message_start":
                        usage = event["message"].get("usage") or {}
                        input_tokens = usage.get("input_tokens")
                        output_tokens = usage.get("output_tokens")
                        yield Usage(input_tokens)
                    elif kind == "message_delta":
                        stop_reason = event["delta"].get("stop_reason") or stop_reason
                        output_tokens = (event.get("usage") or {}).get("output_tokens")
                    elif kind == "message_stop":
                        stopped = True  # read on to the body's end: the connection is reused
                    elif kind == "error":
                        error = event.get("error") or {}
                        raise _error(200, error.get("type") or "", error.get("message") or "")
        except anthropic.APIStatusError as exc:
            raise _error(exc.status_code, exc.type or "", exc.api_message or "") from exc
        except anthropic.APITimeoutError as exc:
            raise ProviderError("upstream_timeout", "Claude did not answer in time.", True) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError("upstream_unreachable", "Could not reach Claude.", True) from exc
        except httpx2.TimeoutException as exc:
            raise ProviderError(
                "upstream_stalled", "Claude stopped sending mid-answer.", True
            ) from exc
        except httpx2.TransportError as exc:
            raise _disconnected() from exc
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ProviderError(
                "upstream_error", "Claude sent an event this server cannot read.", True
            ) from exc
        if not stopped:
            raise _disconnected()
        yield StreamEnd(stop_reason, input_tokens, output_tokens)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


_LINE_END = re.compile(rb"\r\n|\r|\n")


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    """The JSON `data` of each Server-Sent Event (the event name is also in it, as `type`).

    Lines are split on CR, LF and CRLF only, on bytes: text in the JSON may hold
    U+2028 and friends, which `str.splitlines` (and so httpx's `aiter_lines`)
    would wrongly treat as line ends.
    """
    buffer = b""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        # A CR at the very end may be the first half of a CRLF: keep it for later.
        held = buffer.endswith(b"\r")
        lines = _LINE_END.split(buffer[:-1] if held else buffer)
        buffer = lines.pop() + (b"\r" if held else b"")
        for line in lines:
            if not line:  # a blank line ends an event
                if data:
                    yield json.loads(b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            # `event:`, `id:`, `retry:` and `:` comments carry nothing we need.
    line = buffer.rstrip(b"\r")
    if line.startswith(b"data:"):
        data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    if data:
        yield json.loads(b"\n".join(data))


def _disconnected() -> ProviderError:
    return ProviderError(
        "upstream_disconnected", "The connection to Claude dropped mid-answer.", True
    )


def _error(status: int, error_type: str, message: str) -> ProviderError:
    """An upstream error, from a failed status or from an `error` event mid-stream."""
    message = message or "Claude returned an error."
    if error_type == "overloaded_error" or status == 529:
        return ProviderError("upstream_overloaded", message, True, status)
    if error_type == "rate_limit_error" or status == 429:
        return ProviderError("upstream_rate_limited", message, True, status)
    if status in (401, 403):
        return ProviderError("upstream_auth", message, False, status)
    retryable = error_type in _RETRYABLE_TYPES or status >= 500
    return ProviderError("upstream_error", message, retryable, status)
