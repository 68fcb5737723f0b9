"""The provider interface and the small types it speaks.

A provider turns a request into an async stream of `TextDelta`s ending with one
`StreamEnd`, with a `Usage` as soon as it knows the input's size (if it can).
Providers never leak SDK objects or SDK exceptions: failures are raised as
`ProviderError` with a stable code, a human message, and whether a retry could help.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    model: str
    messages: list[ChatTurn]
    system: str = ""
    max_tokens: int = 4096


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What the model reported before its answer ended: the input tokens (Claude's stream
    says so at its start) and, if it said, the output so far. An answer that is stopped or
    breaks has no `StreamEnd`, and still counts what it used (see chat/runs/run.py)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    stop_reason: str = "end_turn"
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass
class ProviderError(Exception):
    """The upstream model failed; `retryable` says whether trying again may help."""

    code: str
    message: str
    retryable: bool = False
    status: int | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Provider(Protocol):
    def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | Usage | StreamEnd]: ...
