"""The stream's vocabulary: event payloads, resume positions, group names.

Shared by the generation run (which publishes events) and the relay (which
turns them, or stored state, into SSE for one client), so both speak the
contract in DESIGN.md the same way.

A resume position (the SSE `id:`) is `<message id>:<offset>` — the number of
characters of that message's text the client has — or `<message id>:end` once
its `message_end` was sent. Offsets count characters, so the replay buffer and
the database text can both serve any position exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .errors import InvalidResumePosition

END = "end"


def conversation_group(conversation_id: uuid.UUID | str) -> str:
    return f"chat.conversation.{conversation_id}"


def event_id(message_id: str, offset: int | None) -> str:
    """`offset=None` marks the message's end."""
    return f"{message_id}:{END if offset is None else offset}"


@dataclass(frozen=True)
class ResumePosition:
    message_id: str
    offset: int | None  # None: the client has the message's end

    @classmethod
    def parse(cls, raw: str) -> ResumePosition:
        message_id, sep, position = raw.strip().partition(":")
        try:
            message_id = str(uuid.UUID(message_id))
            offset = None if position == END else int(position)
        except ValueError:
            raise InvalidResumePosition() from None
        if not sep or (offset is not None and offset < 0):
            raise InvalidResumePosition()
        return cls(message_id, offset)


def message_start_data(*, message_id: str, role: str, status: str, created_at: str) -> dict:
    return {"message": {"id": message_id, "role": role, "status": status, "created_at": created_at}}


def message_end_data(
    *,
    message_id: str,
    status: str,
    stop_reason: str,
    input_tokens: int | None,
    output_tokens: int | None,
) -> dict:
    return {
        "message_id": message_id,
        "status": status,
        "stop_reason": stop_reason or None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def error_data(*, message_id: str, code: str, message: str, retryable: bool) -> dict:
    return {"message_id": message_id, "code": code, "message": message, "retryable": retryable}
