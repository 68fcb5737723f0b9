"""A provider that plays a fixed script: the dummy backend tests configure.

`CHAT_PROVIDER = {"BACKEND": "chat.providers.scripted.ScriptedProvider",
"OPTIONS": {"deltas": ["Hel", "lo"], "fail_with": ProviderError(...)}}`
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .base import ProviderError, ProviderRequest, StreamEnd, TextDelta, Usage


class ScriptedProvider:
    def __init__(
        self,
        *,
        deltas: list[str],
        fail_with: BaseException | None = None,
        delay: float = 0.0,
        stop_reason: str = "end_turn",
        input_tokens: int | None = 7,
    ) -> None:
        self.deltas = deltas
        # `None`: a model that never reports its input before the end (no `Usage`).
        self.input_tokens = input_tokens
        self.fail_with = fail_with
        self.delay = delay
        self.stop_reason = stop_reason
        self.requests: list[ProviderRequest] = []

    async def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[TextDelta | Usage | StreamEnd]:
        self.requests.append(request)
        if self.input_tokens is not None:
            yield Usage(input_tokens=self.input_tokens)
        for text in self.deltas:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(text)
        if self.fail_with is not None:
            raise self.fail_with
        yield StreamEnd(self.stop_reason, input_tokens=7, output_tokens=len(self.deltas))


__all__ = ["ProviderError", "ScriptedProvider"]
