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
  - a stream that ends without `message_stop` was cut short, and one that got
    `message_stop` is complete however its connection then closes (slowly, or
    with a reset: seen through a fault-injecting proxy);
  - a connection that drops or stalls mid-stream raises the transport's own
    exceptions (`httpx2.TransportError` subclasses), not `APIConnectionError`,
    and the SDK does not retry it: a stream that breaks before its first text is
    started again here (see `AnthropicProvider.stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anthropic
import httpx2  # the SDK's transport layer; its exceptions surface mid-stream

from .. import metrics
from .base import ProviderError, ProviderRequest, StreamEnd, TextDelta, Usage

logger = logging.getLogger(__name__)

# Upstream error types (error.type in the body) that a later retry may fix.
_RETRYABLE_TYPES = {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}
# After `message_stop`, how long the rest of the body (normally the chunked
# encoding's last few bytes, in the same packet) may take before we stop waiting.
_BODY_END_SECONDS = 1.0


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
        self.max_retries = max_retries
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
        """The answer's deltas, then its end; a `ProviderError` if it cannot be had.

        `max_retries` bounds the retries of one answer, wherever they happen. The SDK
        retries what fails before a response (connect errors, timeouts, 429/5xx/529);
        a stream that breaks after its response began but before its first text
        (a reset, a stall, a retryable `error` event) is started again here, from the
        retries the SDK left, since the client has seen nothing of it. After some
        text nothing is retried: the answer ends `interrupted` with what arrived.
        """
        retries = self.max_retries  # left for this answer
        while True:
            attempt = _Attempt()
            try:
                # `aclosing`: a stream closed early (a stop) closes its response at once.
                async with contextlib.aclosing(self._attempt(request, retries, attempt)) as items:
                    async for item in items:
                        yield item
                return
            except ProviderError as exc:
                retries -= attempt.retries_taken
                if attempt.has_text or not attempt.responded or not exc.retryable or retries <= 0:
                    raise
                retries -= 1
                metrics.upstream_error(exc.code, retried=True)
                logger.warning("stream failed before any text (%s); starting it again", exc.code)
            await asyncio.sleep(_backoff(self.max_retries - retries - 1))

    async def _attempt(
        self, request: ProviderRequest, retries: int, attempt: _Attempt
    ) -> AsyncIterator[TextDelta | Usage | StreamEnd]:
        client = self.client
        if retries != self.max_retries:
            client = client.with_options(max_retries=retries)
        input_tokens = output_tokens = None
        stop_reason = "end_turn"
        try:
            # `async with` closes the HTTP response on every exit, cancellation
            # included, so the upstream sees us leave and stops generating.
            async with client.messages.with_streaming_response.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=request.system or anthropic.omit,
                messages=[{"role": t.role, "content": t.content} for t in request.messages],
                stream=True,
            ) as response:
                attempt.responded, attempt.retries_taken = True, response.retries_taken
                events = _sse_data(response.iter_bytes())
                async for event in events:
                    kind = event.get("type")
                    if kind == "content_block_delta":
                        delta = event["delta"]
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            attempt.has_text = True
                            yield TextDelta(delta["text"])
                    elif kind == "message_start":
                        usage = event["message"].get("usage") or {}
                        input_tokens = usage.get("input_tokens")
                        output_tokens = usage.get("output_tokens")
                        yield Usage(input_tokens)
                    elif kind == "message_delta":
                        stop_reason = event["delta"].get("stop_reason") or stop_reason
                        output_tokens = (event.get("usage") or {}).get("output_tokens")
                        # Kept by the run if the stream ends before `message_stop`.
                        yield Usage(input_tokens, output_tokens)
                    elif kind == "message_stop":
                        attempt.stopped = True
                        break
                    elif kind == "error":
                        error = event.get("error") or {}
                        raise _error(200, error.get("type") or "", error.get("message") or "")
                if attempt.stopped:
                    await _read_to_end(events)
        except Exception as exc:
            # Once `message_stop` arrived the answer is whole, however the body ends.
            if not attempt.stopped:
                error = _translated(exc)
                if error is exc:
                    raise
                raise error from exc
        if not attempt.stopped:
            raise _disconnected()
        yield StreamEnd(stop_reason, input_tokens, output_tokens)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


@dataclass
class _Attempt:
    """What one request of an answer got to."""

    responded: bool = False  # the response began (the SDK's own retries are over)
    retries_taken: int = 0  # by the SDK, before the response
    has_text: bool = False
    stopped: bool = False  # `message_stop` arrived: the answer is complete


def _backoff(retries_taken: int) -> float:
    """The SDK's own backoff (0.5 s doubling up to 8 s, less up to a quarter), so a
    retry here waits as long as one of the SDK's would."""
    return min(0.5 * 2.0**retries_taken, 8.0) * (1 - 0.25 * random.random())  # noqa: S311


async def _read_to_end(events: AsyncIterator[dict]) -> None:
    """Read the body's end after `message_stop`, so the connection can be reused.

    Only briefly, and however it ends: a close that is slow or broken on the wire
    must not turn a complete answer into a stall. Cut short, the connection is
    closed instead of reused.
    """
    with contextlib.suppress(TimeoutError, httpx2.TransportError, json.JSONDecodeError):
        async with asyncio.timeout(_BODY_END_SECONDS):
            async for _ in events:
                pass


def _translated(exc: Exception) -> Exception:
    """An exception from the SDK or its transport as a `ProviderError` (others as they are)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        return _error(exc.status_code, exc.type or "", exc.api_message or "")
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError("upstream_timeout", "Claude did not answer in time.", True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError("upstream_unreachable", "Could not reach Claude.", True)
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError("upstream_stalled", "Claude stopped sending mid-answer.", True)
    if isinstance(exc, httpx2.TransportError):
        return _disconnected()
    if isinstance(exc, (json.JSONDecodeError, KeyError, TypeError, AttributeError)):
        return ProviderError(
            "upstream_error", "Claude sent an event this server cannot read.", True
        )
    return exc


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
