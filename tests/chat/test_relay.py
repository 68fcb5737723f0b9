"""The relay: each client gets every character exactly once, whatever the live feed does."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from chat import events
from chat.errors import BackendUnavailable, InvalidResumePosition
from chat.events import ConversationDeleted, MessageEnded, ResumePosition, TextAppended
from chat.models import Message
from chat.relay import ConversationRelay
from chat.replay import InMemoryReplayBuffer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def parse(parse_sse):
    def parse(frames: list[bytes]) -> list[tuple[str, dict, str]]:
        return [(e.event, json.loads(e.data), e.id) for e in parse_sse(b"".join(frames))]

    return parse


def text_of(parsed) -> str:
    return "".join(data["text"] for name, data, _ in parsed if name == "delta")


@pytest.fixture
def assistant(conversation):
    return Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Hel"
    )


@pytest.fixture
def buffer(assistant):
    buffer = InMemoryReplayBuffer()
    mid = str(assistant.pk)
    start = events.message_start_data(
        message_id=mid, role="assistant", status="streaming", created_at="t"
    )
    async_to_sync(buffer.start)(mid, start)
    async_to_sync(buffer.append)(mid, "Hello")
    return buffer


def make_relay(conversation, buffer) -> ConversationRelay:
    return ConversationRelay(conversation_id=str(conversation.pk), buffer=buffer)


def delta(message, start, text):
    return TextAppended(str(message.pk), start, text)


def test_fresh_client_gets_start_and_one_delta_with_text_so_far(
    conversation, assistant, buffer, parse
):
    """Joining mid-answer: `message_start`, then one `delta` with everything so far."""
    relay = make_relay(conversation, buffer)
    parsed = parse(async_to_sync(relay.catch_up)(None))
    assert [p[0] for p in parsed] == ["message_start", "delta"]
    assert parsed[1][1]["text"] == "Hello"  # from the buffer, fresher than the DB's "Hel"
    assert parsed[1][2] == f"{assistant.pk}:5"


def test_live_duplicates_and_overlaps_are_dropped(conversation, assistant, buffer, parse):
    """A delta the client already has is dropped; an overlapping one sends only the new part."""
    relay = make_relay(conversation, buffer)
    frames = async_to_sync(relay.catch_up)(None)
    frames += async_to_sync(relay.on_event)(delta(assistant, 3, "lo"))  # already had it
    async_to_sync(buffer.append)(str(assistant.pk), " world")
    frames += async_to_sync(relay.on_event)(delta(assistant, 5, " world"))
    frames += async_to_sync(relay.on_event)(delta(assistant, 5, " world"))  # delivered twice
    assert text_of(parse(frames)) == "Hello world"


def test_gap_in_live_delivery_is_repaired_from_the_buffer(conversation, assistant, buffer, parse):
    """A dropped live delta is noticed by its offset and filled from the replay buffer."""
    relay = make_relay(conversation, buffer)
    frames = async_to_sync(relay.catch_up)(None)
    async_to_sync(buffer.append)(str(assistant.pk), " big")
    async_to_sync(buffer.append)(str(assistant.pk), " world")
    # The " big" delta was lost by the channel layer; " world" arrives.
    frames += async_to_sync(relay.on_event)(delta(assistant, 9, " world"))
    assert text_of(parse(frames)) == "Hello big world"


def test_missing_tail_is_repaired_at_message_end(conversation, assistant, buffer, parse):
    """If the last deltas were dropped, `message_end` brings them before the end event."""
    relay = make_relay(conversation, buffer)
    frames = async_to_sync(relay.catch_up)(None)
    mid = str(assistant.pk)
    async_to_sync(buffer.append)(mid, "!")
    end = events.message_end_data(
        message_id=mid, status="complete", stop_reason="end_turn", input_tokens=1, output_tokens=2
    )
    async_to_sync(buffer.finish)(mid, end, None)
    frames += async_to_sync(relay.on_event)(MessageEnded(mid, 6, end, None))
    parsed = parse(frames)
    assert text_of(parsed) == "Hello!"
    assert parsed[-1][0] == "message_end"
    assert parsed[-1][2] == f"{mid}:end"
    # Anything after the end for that message is ignored.
    assert async_to_sync(relay.on_event)(delta(assistant, 6, "?")) == []


def test_resume_sends_exactly_the_missing_text(conversation, assistant, buffer, parse):
    """Resuming at offset 2 yields characters 2.. and nothing before."""
    relay = make_relay(conversation, buffer)
    parsed = parse(async_to_sync(relay.catch_up)(ResumePosition(str(assistant.pk), 2)))
    assert [p[0] for p in parsed] == ["delta"]
    assert parsed[0][1]["text"] == "llo"


def test_resume_after_the_end_sends_nothing_more(conversation, assistant, buffer):
    """A client that saw `message_end` gets nothing more for that message."""
    assistant.status = "complete"
    assistant.content = "Hello"
    assistant.save()
    relay = make_relay(conversation, InMemoryReplayBuffer())
    assert async_to_sync(relay.catch_up)(ResumePosition(str(assistant.pk), None)) == []


def test_resume_of_a_finished_message_from_the_database(conversation, assistant, parse):
    """With the buffer gone, the database serves the rest of the text and the end."""
    assistant.status = "interrupted"
    assistant.content = "Hello wor"
    assistant.error_code = "upstream_disconnected"
    assistant.error_message = "Dropped"
    assistant.save()
    relay = make_relay(conversation, InMemoryReplayBuffer())
    parsed = parse(async_to_sync(relay.catch_up)(ResumePosition(str(assistant.pk), 5)))
    assert [p[0] for p in parsed] == ["delta", "error", "message_end"]
    assert parsed[0][1]["text"] == " wor"
    assert parsed[1][1]["code"] == "upstream_disconnected"
    assert parsed[2][1]["status"] == "interrupted"


def test_resume_includes_messages_that_started_later(conversation, assistant, buffer, parse):
    """Messages that began after the resume point are replayed whole."""
    assistant.status = "complete"
    assistant.content = "Hello"
    assistant.save()
    later = Message.objects.create(
        conversation=conversation, role="assistant", status="complete", content="Second"
    )
    relay = make_relay(conversation, InMemoryReplayBuffer())
    parsed = parse(async_to_sync(relay.catch_up)(ResumePosition(str(assistant.pk), None)))
    assert [p[0] for p in parsed] == ["message_start", "delta", "message_end"]
    assert parsed[0][1]["message"]["id"] == str(later.pk)
    assert parsed[1][1]["text"] == "Second"


@pytest.mark.parametrize("raw", ["nonsense", "abc:1", "7b0c...:x", f"{'0' * 32}:-1", ":5"])
def test_malformed_resume_positions_are_refused(raw):
    """A Last-Event-ID we did not issue is a client error, never a crash."""
    with pytest.raises(InvalidResumePosition):
        ResumePosition.parse(raw)


def test_resume_positions_round_trip():
    """Ids we issue parse back to the same position."""
    mid = "7b0c6f8e-3c38-4c4b-9d8e-2f0f4f5b8a11"
    assert ResumePosition.parse(events.event_id(mid, 42)) == ResumePosition(mid, 42)
    assert ResumePosition.parse(events.event_id(mid, None)) == ResumePosition(mid, None)


def test_unknown_resume_position_is_reset_explicitly(conversation, assistant, buffer, parse):
    """A position we cannot place gets a `reset` event, then the fresh-client snapshot."""
    relay = make_relay(conversation, buffer)
    unknown = ResumePosition("7b0c6f8e-3c38-4c4b-9d8e-2f0f4f5b8a11", 3)
    parsed = parse(async_to_sync(relay.catch_up)(unknown))
    assert [p[0] for p in parsed] == ["reset", "message_start", "delta"]
    assert parsed[0][1]["reason"] == "unknown_position"
    assert parsed[2][1]["text"] == "Hello"


def test_in_memory_buffer_forgets_ended_messages_after_their_ttl():
    import asyncio

    async def go():
        buffer = InMemoryReplayBuffer(ttl=0.05)
        await buffer.start("a", {"n": "a"})
        await buffer.append("a", "text")
        await buffer.finish("a", {"end": True}, None)
        await buffer.start("b", {"n": "b"})  # still streaming: never expires
        await buffer.start("c", {"n": "c"})
        await buffer.finish("c", {"end": True}, None)
        await buffer.start("c", {"n": "c again"})  # restarted: its old end no longer counts
        assert (await buffer.get("a")).text == "text"
        await asyncio.sleep(0.06)
        await buffer.start("d", {"n": "d"})  # expiry runs on start
        return [await buffer.get(k) for k in "abcd"]

    a, b, c, d = asyncio.run(go())
    assert a is None
    assert b is not None and c.start == {"n": "c again"} and d is not None


def test_a_quiet_message_is_finished_from_the_buffer_when_its_end_was_lost(
    conversation, assistant, buffer, parse
):
    """The layer dropped the last delta and `message_end`: the quiet check delivers both."""
    relay = make_relay(conversation, buffer)
    async_to_sync(relay.catch_up)(None)  # the client has "Hello"
    assert relay.in_flight
    mid = str(assistant.pk)
    async_to_sync(buffer.append)(mid, " world")
    end = events.message_end_data(
        message_id=mid, status="complete", stop_reason="end_turn", input_tokens=1, output_tokens=2
    )
    async_to_sync(buffer.finish)(mid, end, None)
    parsed = parse(async_to_sync(relay.check_in_flight)())
    assert text_of(parsed) == " world"
    assert [name for name, _, _ in parsed] == ["delta", "message_end"]
    assert not relay.in_flight
    assert async_to_sync(relay.check_in_flight)() == []  # nothing twice


def test_a_quiet_message_falls_back_to_the_database(conversation, assistant, parse):
    """Not in the buffer (expired, or Redis flushed): the database's final state ends it."""
    relay = make_relay(conversation, InMemoryReplayBuffer())
    async_to_sync(relay.catch_up)(None)  # from the database: "Hel"
    Message.objects.filter(pk=assistant.pk).update(content="Hello", status="cancelled")
    parsed = parse(async_to_sync(relay.check_in_flight)())
    assert text_of(parsed) == "lo"
    assert parsed[-1][0] == "message_end" and parsed[-1][1]["status"] == "cancelled"


def test_a_quiet_check_that_cannot_reach_the_buffer_raises(conversation, assistant, buffer):
    """Redis away: the stream must end (its client reconnects), not wait silently."""

    class Down(InMemoryReplayBuffer):
        async def get(self, message_id):
            raise BackendUnavailable("redis is down")

    relay = make_relay(conversation, buffer)
    async_to_sync(relay.catch_up)(None)
    relay.buffer = Down()
    with pytest.raises(BackendUnavailable):
        async_to_sync(relay.check_in_flight)()


def test_a_resume_beyond_the_stored_text_resets_to_what_is_stored(conversation, assistant, parse):
    """A client that saw more than was saved (its process died before the save) is told
    `reset` and gets the message again in full, so it ends up with exactly the stored text."""
    Message.objects.filter(pk=assistant.pk).update(content="Hello", status="interrupted")
    relay = make_relay(conversation, InMemoryReplayBuffer())
    mid = str(assistant.pk)
    parsed = parse(async_to_sync(relay.catch_up)(ResumePosition(mid, 429)))
    assert [name for name, _, _ in parsed] == ["reset", "message_start", "delta", "message_end"]
    assert parsed[0][1]["reason"] == "position_beyond_text"
    assert text_of(parsed) == "Hello"
    assert parsed[-1][1]["status"] == "interrupted"


def test_a_live_end_shorter_than_what_the_client_has_resets_it(
    conversation, assistant, buffer, parse
):
    """The same when the end arrives live: the client's text is replaced by the stored one."""
    relay = make_relay(conversation, buffer)
    mid = str(assistant.pk)
    async_to_sync(relay.catch_up)(None)
    relay.sent[mid] = 8  # the client has 8 characters of a message stored with 5
    end = events.message_end_data(
        message_id=mid, status="interrupted", stop_reason="", input_tokens=1, output_tokens=2
    )
    async_to_sync(buffer.finish)(mid, end, None)
    parsed = parse(async_to_sync(relay.on_event)(MessageEnded(mid, 5, end, None)))
    assert [name for name, _, _ in parsed] == ["reset", "message_start", "delta", "message_end"]
    assert text_of(parsed) == "Hello"


def test_a_deleted_conversation_ends_its_stream(conversation, assistant, buffer, parse):
    """Deletion ends the message in flight (`cancelled`, with the reason), says so, and closes."""
    relay = make_relay(conversation, buffer)
    async_to_sync(relay.catch_up)(None)
    parsed = parse(async_to_sync(relay.on_events)([ConversationDeleted(str(conversation.pk))]))
    assert [name for name, _, _ in parsed] == ["error", "message_end", "conversation_deleted"]
    assert parsed[0][1]["code"] == "conversation_deleted"
    assert parsed[1][1]["status"] == "cancelled"
    assert relay.closed


def test_a_quiet_message_that_no_longer_exists_ends_the_stream(conversation, assistant, parse):
    """The deletion's event was lost: the quiet check finds the message gone and closes."""
    relay = make_relay(conversation, InMemoryReplayBuffer())
    async_to_sync(relay.catch_up)(None)
    Message.objects.filter(pk=assistant.pk).delete()
    parsed = parse(async_to_sync(relay.check_in_flight)())
    assert [name for name, _, _ in parsed][-1] == "conversation_deleted"
    assert relay.closed
