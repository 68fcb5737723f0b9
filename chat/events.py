"""The stream's vocabulary: events, their payloads, resume positions, group names.

Runs publish these events, the fan-out carries them between processes, and the relay
turns them (or stored state) into SSE for one client: each is built here, once, so the
three cannot drift apart. The payloads (`*_data`) are the JSON of the SSE contract in
docs/streaming.md.

A resume position (the SSE `id:`) is `<message id>:<offset>` — the number of
characters of that message's text the client has — or `<message id>:end` once
its `message_end` was sent. Offsets count characters, so the replay buffer and
the database text can both serve any position exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from .errors import InvalidResumePosition

END = "end"


class RunError(StrEnum):
    """Why a run ended without completing, when the model did not say (its own errors
    carry the provider's codes: `upstream_overloaded`, `upstream_disconnected`, ...)."""

    INTERNAL = "internal_error"
    SERVER_SHUTDOWN = "server_shutdown"
    RUN_LOST = "run_lost"
    CONVERSATION_DELETED = "conversation_deleted"


RUN_ERROR_MESSAGES = {
    RunError.INTERNAL: "Something went wrong while generating the answer.",
    RunError.SERVER_SHUTDOWN: "The server generating this answer shut down.",
    RunError.RUN_LOST: "The server generating this answer stopped; the text so far is kept.",
    RunError.CONVERSATION_DELETED: "This conversation was deleted.",
}


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


# --- SSE payloads (the public contract) ----------------------------------------------


def message_start_data(
    *,
    message_id: str,
    role: str,
    status: str,
    created_at: str,
    context_omitted_turns: int = 0,
    model: str = "",
) -> dict:
    return {
        "message": {
            "id": message_id,
            "role": role,
            "status": status,
            "created_at": created_at,
            "context_omitted_turns": context_omitted_turns,
            "model": model,
        }
    }


def message_end_data(
    *,
    message_id: str,
    status: str,
    stop_reason: str,
    input_tokens: int | None,
    output_tokens: int | None,
    usage_estimated: bool = False,
) -> dict:
    return {
        "message_id": message_id,
        "status": status,
        "stop_reason": stop_reason or None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "estimated": usage_estimated,
        },
    }


def error_data(*, message_id: str | None, code: str, message: str, retryable: bool) -> dict:
    return {"message_id": message_id, "code": code, "message": message, "retryable": retryable}


# The stream's own last event when its user's access ended (deactivated, password
# changed, deleted): an `error` about no message, after which the stream ends.
AUTH_REVOKED = "auth_revoked"


def auth_revoked_data() -> dict:
    return error_data(
        message_id=None,
        code=AUTH_REVOKED,
        message="Your access has ended; sign in again.",
        retryable=False,
    )


def run_error_data(*, message_id: str, code: RunError) -> dict:
    return error_data(
        message_id=message_id,
        code=str(code),
        message=RUN_ERROR_MESSAGES[code],
        retryable=code != RunError.CONVERSATION_DELETED,
    )


# --- Live events (what runs publish and streams receive) -----------------------------


@dataclass(frozen=True, slots=True)
class MessageStarted:
    message_id: str
    data: dict  # the `message_start` payload


@dataclass(frozen=True, slots=True)
class TextAppended:
    message_id: str
    start: int  # the offset of `text` in the message
    text: str


@dataclass(frozen=True, slots=True)
class MessageEnded:
    message_id: str
    length: int  # the message's final length, so a stream can tell it missed text
    data: dict  # the `message_end` payload
    error: dict | None  # the `error` payload, if it ended with one


@dataclass(frozen=True, slots=True)
class ConversationDeleted:
    conversation_id: str


StreamEvent = MessageStarted | TextAppended | MessageEnded | ConversationDeleted

# On the wire (msgpack through Redis) an event is a short list: a tag, then its fields.
_TAGS = {MessageStarted: "s", TextAppended: "d", MessageEnded: "e", ConversationDeleted: "x"}
_CLASSES = {tag: cls for cls, tag in _TAGS.items()}


def to_wire(event: StreamEvent) -> list:
    tag = _TAGS[type(event)]
    return [tag, *(getattr(event, name) for name in event.__slots__)]


def from_wire(item: list) -> StreamEvent:
    return _CLASSES[item[0]](*item[1:])
