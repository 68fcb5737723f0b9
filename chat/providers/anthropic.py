"""Claude through the official `anthropic` SDK.

The SDK's exceptions stop here: everything that can go wrong upstream, before
or during the stream, leaves this module as a `ProviderError`. Two cases need
care because the SDK does not wrap them in its usual way:

* an `error` event in the middle of a stream is raised as `APIStatusError`
  with the HTTP status of the (successful) response, 200;
* a connection that drops or stalls mid-stream raises the transport's own
  exceptions (`httpx2.TransportError` subclasses), not `APIConnectionError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2  # the SDK's transport; its exceptions surface mid-stream

from .base import ProviderError, ProviderRequest, StreamEnd, TextDelta

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
    ) -> None:
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=anthropic.Timeout(read_timeout, connect=connect_timeout),
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        input_tokens = output_tokens = None
        stop_reason = "end_turn"
        try:
            stream = await self.client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=request.system or anthropic.omit,
                messages=[{"role": t.role, "content": t.content} for t in request.messages],
                stream=True,
            )
            # `async with` closes the HTTP response on every exit, cancellation
            # included, so the upstream sees us leave and stops generating.
            async with stream:
                async for event in stream:
                    if event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield TextDelta(event.delta.text)
                    elif event.type == "message_start":
                        input_tokens = event.message.usage.input_tokens
                        output_tokens = event.message.usage.output_tokens
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        output_tokens = event.usage.output_tokens
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise ProviderError("upstream_timeout", "Claude did not answer in time.", True) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError("upstream_unreachable", "Could not reach Claude.", True) from exc
        except httpx2.TimeoutException as exc:
            raise ProviderError(
                "upstream_stalled", "Claude stopped sending mid-answer.", True
            ) from exc
        except httpx2.TransportError as exc:
            raise ProviderError(
                "upstream_disconnected", "The connection to Claude dropped mid-answer.", True
            ) from exc
        yield StreamEnd(stop_reason, input_tokens, output_tokens)

    async def aclose(self) -> None:
        await self.client.close()


def _status_error(exc: anthropic.APIStatusError) -> ProviderError:
    error_type = exc.type or ""
    message = exc.api_message or "Claude returned an error."
    if error_type == "overloaded_error" or exc.status_code == 529:
        return ProviderError("upstream_overloaded", message, True, exc.status_code)
    if error_type == "rate_limit_error" or exc.status_code == 429:
        return ProviderError("upstream_rate_limited", message, True, exc.status_code)
    if exc.status_code in (401, 403):
        return ProviderError("upstream_auth", message, False, exc.status_code)
    retryable = error_type in _RETRYABLE_TYPES or exc.status_code >= 500
    return ProviderError("upstream_error", message, retryable, exc.status_code)
