"""A conversation as a file: Markdown for people, JSON for programs.

Both list every message oldest first, streamed as they are read, a page of messages at a
time (`selectors.message_export_page`), so a long conversation is never held in memory.
Regenerated answers are all there, marked: the answers to one user message are its
attempts, numbered in the order they were made, and all but the last are `superseded`
(the page shows the last one).

The JSON document (`"format": "chatsite.conversation"`, `"version": 1`)::

    {
      "format": "chatsite.conversation",
      "version": 1,
      "exported_at": "2026-12-02T10:41:03.123456Z",
      "conversation": {"id", "title", "system_prompt", "model", "created_at", "updated_at"},
      "messages": [
        {
          "id": "…", "role": "user" | "assistant",
          "content": "…",
          "status": "complete" | "pending" | "streaming" | "cancelled" | "failed" | "interrupted",
          "created_at": "…", "completed_at": "…" | null,
          "reply_to": the user message an answer replies to (null for user messages),
          "parent": the answer a user message follows (null for answers and for a
                    conversation's first message; user messages with one parent are
                    edits, each starting a branch),
          "stop_reason": "end_turn" | "max_tokens" | … | "",
          "input_tokens": int | null, "output_tokens": int | null,
          "error_code": "…" | "", "error_message": "…" | "",
          "attempt": n, "attempts": m (answers: this is attempt n of m at its user
                     message; null for user messages),
          "superseded": true when a later attempt replaced this answer
        }, …
      ]
    }

Times are ISO 8601 in UTC, as the API writes them. Later versions may add keys; they
will not change or remove these.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from . import selectors
from .models import Conversation, Message
from .reconnect import reconnecting

JSON_FORMAT_NAME = "chatsite.conversation"
JSON_FORMAT_VERSION = 1
PAGE_SIZE = 500  # messages per read: each page is one short query
_SLUG_CHARS = 60

# A message's status as the Markdown notes it; complete answers need no note.
_STATUS_NOTES = {
    Message.Status.PENDING: "not started yet",
    Message.Status.STREAMING: "still being written when exported",
    Message.Status.CANCELLED: "stopped",
    Message.Status.FAILED: "failed",
    Message.Status.INTERRUPTED: "interrupted",
}


def _iso(value: datetime | None) -> str | None:
    # What DRF's DateTimeField writes for an aware UTC time: ISO 8601 with "Z".
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _readable(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Turns:
    """Groups messages, in order, into turns (a user message and its answers) and hands
    each turn on once it is complete, each answer with its attempt number.

    An answer always comes after its user message and before the next turn starts
    (only the latest answer can be regenerated), so a turn is complete when a message
    of another turn arrives, and only one turn is ever held.
    """

    def __init__(self) -> None:
        self.key: object = None
        self.held: list[Message] = []

    def add(self, message: Message) -> list[tuple[Message, int | None, int | None]]:
        # Answers stored without `reply_to` stand alone, as they do on the page.
        key = message.reply_to_id if message.role == Message.Role.ASSISTANT else None
        key = key or message.pk
        if self.held and key == self.key:
            self.held.append(message)
            return []
        done = self.flush()
        self.key, self.held = key, [message]
        return done

    def flush(self) -> list[tuple[Message, int | None, int | None]]:
        answers = [m for m in self.held if m.role == Message.Role.ASSISTANT]
        done = []
        for message in self.held:
            if message.role == Message.Role.ASSISTANT:
                done.append((message, answers.index(message) + 1, len(answers)))
            else:
                done.append((message, None, None))
        self.held = []
        return done


class MarkdownExport:
    media_type = "text/markdown; charset=utf-8"
    extension = "md"

    def __init__(self, conversation: Conversation, exported_at: datetime) -> None:
        self.conversation = conversation
        self.exported_at = exported_at

    def head(self) -> str:
        c = self.conversation
        lines = [
            f"# {_one_line(c.title) or 'Untitled conversation'}",
            "",
            f"- Model: {c.model}",
            f"- Created: {_readable(c.created_at)}",
            f"- Exported: {_readable(self.exported_at)}",
            f"- Conversation: {c.pk}",
            "",
        ]
        if c.system_prompt.strip():
            lines += ["System prompt:", ""]
            lines += [f"> {line}".rstrip() for line in c.system_prompt.splitlines()]
            lines.append("")
        lines += ["---", ""]
        return "\n".join(lines) + "\n"

    def message(self, message: Message, attempt: int | None, attempts: int | None) -> str:
        who = "You" if message.role == Message.Role.USER else "Claude"
        lines = [f"## {who} · {_readable(message.created_at)}", ""]
        if attempts and attempts > 1:
            replaced = (
                " (replaced by a regenerated answer)" if attempt < attempts else " (the latest)"
            )
            lines += [f"*Answer {attempt} of {attempts} to this message{replaced}*", ""]
        if message.content:
            lines += [message.content.rstrip("\n"), ""]
        note = _STATUS_NOTES.get(message.status)
        if note:
            detail = message.error_message or message.error_code
            lines += [f"*Status: {note}{': ' + _one_line(detail) if detail else ''}*", ""]
        if message.input_tokens is not None or message.output_tokens is not None:
            counts = (("input", message.input_tokens), ("output", message.output_tokens))
            usage = [f"{count} {name} tokens" for name, count in counts if count is not None]
            lines += [f"*{' · '.join(usage)}*", ""]
        return "\n".join(lines) + "\n"

    def tail(self) -> str:
        return ""


class JsonExport:
    media_type = "application/json"
    extension = "json"

    def __init__(self, conversation: Conversation, exported_at: datetime) -> None:
        self.conversation = conversation
        self.exported_at = exported_at
        self.first = True

    def head(self) -> str:
        c = self.conversation
        document = {
            "format": JSON_FORMAT_NAME,
            "version": JSON_FORMAT_VERSION,
            "exported_at": _iso(self.exported_at),
            "conversation": {
                "id": str(c.pk),
                "title": c.title,
                "system_prompt": c.system_prompt,
                "model": c.model,
                "created_at": _iso(c.created_at),
                "updated_at": _iso(c.updated_at),
            },
        }
        # The messages follow one at a time: the document is written open, then closed.
        return _dumps(document)[:-1] + ', "messages": ['

    def message(self, message: Message, attempt: int | None, attempts: int | None) -> str:
        item = {
            "id": str(message.pk),
            "role": message.role,
            "content": message.content,
            "status": message.status,
            "created_at": _iso(message.created_at),
            "completed_at": _iso(message.completed_at),
            "reply_to": str(message.reply_to_id) if message.reply_to_id else None,
            "parent": str(message.parent_id) if message.parent_id else None,
            "stop_reason": message.stop_reason,
            "input_tokens": message.input_tokens,
            "output_tokens": message.output_tokens,
            "error_code": message.error_code,
            "error_message": message.error_message,
            "attempt": attempt,
            "attempts": attempts,
            "superseded": attempt is not None and attempt < attempts,
        }
        separator = "" if self.first else ", "
        self.first = False
        return separator + _dumps(item)

    def tail(self) -> str:
        return "]}\n"


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


FORMATS = {"md": MarkdownExport, "json": JsonExport}


def filename(conversation: Conversation, fmt: str, exported_at: datetime) -> str:
    slug = slugify(conversation.title)[:_SLUG_CHARS].strip("-") or "conversation"
    return f"{slug}-{exported_at.astimezone(UTC):%Y-%m-%d}.{FORMATS[fmt].extension}"


def content_disposition(conversation: Conversation, fmt: str, exported_at: datetime) -> str:
    return content_disposition_header(True, filename(conversation, fmt, exported_at))


# The pages are read on the loop's shared thread pool, as a stream's reads are
# (chat/relay.py): a download in progress holds no request thread.
_read_page = database_sync_to_async(
    reconnecting(selectors.message_export_page), thread_sensitive=False
)


def _messages(writer, ready: Iterable[tuple[Message, int | None, int | None]]) -> str:
    return "".join(writer.message(message, *attempts) for message, *attempts in ready)


async def export_stream(
    *, conversation: Conversation, fmt: str, exported_at: datetime | None = None
) -> AsyncIterator[bytes]:
    """The file, in pieces: the head, each page of messages, the tail."""
    writer = FORMATS[fmt](conversation, exported_at or timezone.now())
    yield writer.head().encode()
    turns = _Turns()
    after = None
    while True:
        page = await _read_page(conversation_id=conversation.pk, after=after, size=PAGE_SIZE)
        ready = [item for message in page for item in turns.add(message)]
        if ready:
            yield _messages(writer, ready).encode()
        if len(page) < PAGE_SIZE:
            break
        after = page[-1]
    yield (_messages(writer, turns.flush()) + writer.tail()).encode()
