"""What one SSE client should receive: catch-up from stored state, then live events.

The relay keeps, per message, how many characters this client already has.
Live events from the channel layer are deduplicated and gap-checked against
that offset; anything missing is filled from the replay buffer (or, once the
buffer has expired, the database). So the client gets every character exactly
once, whatever the channel layer dropped or delivered twice.

When the client claims more of a message than is stored (it saw text that a
process crash lost before it was saved), the relay sends `reset` and the
message again in full, so the client ends up with exactly what is stored.
"""

from __future__ import annotations

from collections.abc import Iterator

from channels.db import database_sync_to_async

from . import metrics, sse
from .errors import BackendUnavailable
from .events import (
    ConversationDeleted,
    MessageStarted,
    ResumePosition,
    RunError,
    StreamEvent,
    TextAppended,
    event_id,
    message_end_data,
    message_start_data,
    run_error_data,
)
from .models import Message
from .reconnect import reconnecting
from .replay import ReplayBuffer, Snapshot

# On resume, how many later messages (finished while the client was away) to replay.
_MAX_MISSED_MESSAGES = 20


class ConversationRelay:
    def __init__(self, *, conversation_id: str, buffer: ReplayBuffer) -> None:
        self.conversation_id = conversation_id
        self.buffer = buffer
        self.sent: dict[str, int] = {}  # message id -> characters the client has
        self.ended: set[str] = set()
        self.closed = False  # the stream should end (its conversation was deleted)

    # --- catch-up -------------------------------------------------------------

    async def catch_up(self, resume: ResumePosition | None) -> list[bytes]:
        """Frames that bring a (re)connecting client up to date.

        Fresh client: the message streaming now, if any, as `message_start` plus
        one `delta` with its text so far. Resuming client: the rest of the
        message it was reading, then every message that started after it.
        """
        frames: list[bytes] = []
        pending = await _messages_to_replay(self.conversation_id, resume)
        if resume is not None and pending and str(pending[0].pk) == resume.message_id:
            if resume.offset is None:
                self.ended.add(resume.message_id)
            else:
                self.sent[resume.message_id] = resume.offset
        elif resume is not None:
            # We cannot place this position (its message was deleted, or is not in
            # this conversation): say so, then start over like a fresh client.
            frames.append(_reset("unknown_position", "Resume position not found."))
            metrics.stream_reset("unknown_position")
        for message in pending:
            message_id = str(message.pk)
            if message_id not in self.ended:
                snapshot = await self._buffered(message_id) or _snapshot_from_db(message)
                frames.extend(self._frames_to(message_id, snapshot))
        return frames

    def _frames_to(self, message_id: str, snapshot: Snapshot) -> list[bytes]:
        """What the client lacks of `snapshot`: its start, the rest of its text, its end."""
        frames = []
        if self.sent.get(message_id, 0) > len(snapshot.text):
            # The client has more than is stored: start the message over.
            del self.sent[message_id]
            frames.append(_reset("position_beyond_text", "The message is sent again in full."))
            metrics.stream_reset("position_beyond_text")
        if message_id not in self.sent:
            frames.append(self._start(message_id, snapshot.start))
        frames.extend(self._text_from(message_id, snapshot.text))
        if snapshot.end is not None:
            frames.extend(self._end(message_id, snapshot.end, snapshot.error))
        return frames

    # --- a message that went quiet ---------------------------------------------

    @property
    def in_flight(self) -> bool:
        """A message has started on this stream and not ended."""
        return bool(self.sent)

    async def check_in_flight(self) -> list[bytes]:
        """Nothing has arrived for a while on a message that has not ended: ask the
        buffer (or the database) for what the channel layer, at-most-once, may have
        dropped — the tail of the text, and above all `message_end`.

        Raises `BackendUnavailable` if the buffer cannot be read (Redis is away): the
        stream should end, so its client reconnects and resumes once it can be served.
        """
        frames: list[bytes] = []
        for message_id in list(self.sent):
            # Expired from the buffer: the database has it.
            snapshot = await self._read_buffer(message_id) or await _snapshot_by_id(message_id)
            if snapshot is None:
                # Neither has it: its conversation was deleted.
                return self._deleted()
            frames.extend(self._frames_to(message_id, snapshot))
        return frames

    # --- live -------------------------------------------------------------------

    async def on_events(self, batch: list[StreamEvent]) -> list[bytes]:
        """Frames for live events that arrived together; adjoining deltas become one."""
        frames: list[bytes] = []
        for event in _merge_deltas(batch):
            frames.extend(await self.on_event(event))
            if self.closed:
                break
        return frames

    async def on_event(self, event: StreamEvent) -> list[bytes]:
        kind = type(event)
        if kind is ConversationDeleted:
            return self._deleted()
        message_id = event.message_id
        if message_id in self.ended:
            return []
        if kind is TextAppended:
            return await self._on_delta(message_id, event.start, event.text)
        if kind is MessageStarted:
            return [] if message_id in self.sent else [self._start(message_id, event.data)]
        # MessageEnded
        have = self.sent.get(message_id)
        if have is None or have != event.length:
            snapshot = await self._stored(message_id)
            if snapshot is not None:
                metrics.gap_repaired()
                snapshot.end, snapshot.error = event.data, event.error
                return self._frames_to(message_id, snapshot)
        return self._end(message_id, event.data, event.error)

    async def _on_delta(self, message_id: str, start: int, text: str) -> list[bytes]:
        have = self.sent.get(message_id)
        if have is None or start > have:
            # We missed the start or a delta: take what we lack from stored state.
            snapshot = await self._stored(message_id)
            if snapshot is None:
                return []
            metrics.gap_repaired()
            snapshot.end = None  # the live end event will follow
            return self._frames_to(message_id, snapshot)
        return list(self._text_from(message_id, text, text_offset=start))

    async def _buffered(self, message_id: str) -> Snapshot | None:
        # Redis down or slow: the database's checkpoint is the next best source.
        try:
            return await self._read_buffer(message_id)
        except BackendUnavailable:
            return None

    async def _read_buffer(self, message_id: str) -> Snapshot | None:
        snapshot = await self.buffer.get(message_id)
        metrics.replay_read(hit=snapshot is not None)
        return snapshot

    async def _stored(self, message_id: str) -> Snapshot | None:
        """The buffer's snapshot, else the database's."""
        return await self._buffered(message_id) or await _snapshot_by_id(message_id)

    def _deleted(self) -> list[bytes]:
        """The conversation is gone: end what is in flight `cancelled`, say so, close."""
        frames = []
        for message_id in list(self.sent):
            end = message_end_data(
                message_id=message_id,
                status=Message.Status.CANCELLED,
                stop_reason="",
                input_tokens=None,
                output_tokens=None,
            )
            error = run_error_data(message_id=message_id, code=RunError.CONVERSATION_DELETED)
            frames.extend(self._end(message_id, end, error))
        frames.append(sse.event("conversation_deleted", {"conversation_id": self.conversation_id}))
        self.closed = True
        return frames

    # --- frames -----------------------------------------------------------------

    def _start(self, message_id: str, data: dict) -> bytes:
        self.sent[message_id] = 0
        return sse.event("message_start", data, id=event_id(message_id, 0))

    def _text_from(self, message_id: str, text: str, *, text_offset: int = 0) -> Iterator[bytes]:
        """The part of `text` (which begins at `text_offset`) the client lacks."""
        have = self.sent[message_id]
        new = text[have - text_offset :]
        if new:
            self.sent[message_id] = have + len(new)
            yield sse.event(
                "delta",
                {"message_id": message_id, "text": new},
                id=event_id(message_id, have + len(new)),
            )

    def _end(self, message_id: str, end: dict, error: dict | None) -> list[bytes]:
        self.ended.add(message_id)
        self.sent.pop(message_id, None)
        frames = []
        if error is not None:
            frames.append(sse.event("error", error))
        frames.append(sse.event("message_end", end, id=event_id(message_id, None)))
        return frames


def _reset(reason: str, message: str) -> bytes:
    return sse.event("reset", {"reason": reason, "message": message})


def _merge_deltas(batch: list[StreamEvent]) -> list[StreamEvent]:
    """Join each run of deltas that continue one another (same message, no gap)."""
    merged: list[StreamEvent] = []
    for event in batch:
        last = merged[-1] if merged else None
        if (
            type(event) is TextAppended
            and type(last) is TextAppended
            and last.message_id == event.message_id
            and last.start + len(last.text) == event.start
        ):
            merged[-1] = TextAppended(last.message_id, last.start, last.text + event.text)
        else:
            merged.append(event)
    return merged


async def _snapshot_by_id(message_id: str) -> Snapshot | None:
    message = await _message(message_id)
    return None if message is None else _snapshot_from_db(message)


def _snapshot_from_db(message: Message) -> Snapshot:
    message_id = str(message.pk)
    start = message_start_data(
        message_id=message_id,
        role=message.role,
        status=message.status,
        created_at=message.created_at.isoformat(),
        context_omitted_turns=message.context_omitted_turns,
        model=message.model,
    )
    if message.is_active:
        return Snapshot(start=start, text=message.content)
    end = message_end_data(
        message_id=message_id,
        status=message.status,
        stop_reason=message.stop_reason,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        usage_estimated=message.usage_estimated,
    )
    error = None
    if message.error_code:
        error = {
            "message_id": message_id,
            "code": message.error_code,
            "message": message.error_message,
            "retryable": message.status in (Message.Status.FAILED, Message.Status.INTERRUPTED),
        }
    return Snapshot(start=start, text=message.content, end=end, error=error)


def _on_shared_pool(func):
    """A stream's reads run on the loop's shared thread pool, not on a thread of
    the stream's own (see chatsite/handlers.py): a stream holds no thread. A read
    whose connection dies under it is read again on a new one (chat/reconnect.py)."""
    return database_sync_to_async(reconnecting(func), thread_sensitive=False)


@_on_shared_pool
def _messages_to_replay(conversation_id: str, resume: ResumePosition | None) -> list[Message]:
    assistant = Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).order_by("created_at")
    anchor = assistant.filter(pk=resume.message_id).first() if resume else None
    if anchor is None:
        # A fresh client (or an unknown position): only what is streaming now.
        return list(assistant.filter(status__in=Message.ACTIVE_STATUSES))
    later = assistant.filter(created_at__gt=anchor.created_at)[:_MAX_MISSED_MESSAGES]
    return [anchor, *later]


@_on_shared_pool
def _message(message_id: str) -> Message | None:
    return Message.objects.filter(pk=message_id).first()
