"""Leases, the orphan sweeper, stop and regenerate at the service level."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from chat import runs, selectors, services
from chat.context import estimate_tokens
from chat.errors import MessageFinished, NotAnAnswer, RunActive
from chat.models import Message
from chat.providers import get_provider
from chat.replay import get_replay_buffer
from chat.runs import StopReason, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_runs(monkeypatch):
    """Runs are started by hand in these tests."""
    monkeypatch.setattr(runs.manager, "start", lambda job: None)
    monkeypatch.setattr(runs.manager, "stop", lambda message_id, owner, reason=None: None)


def tick() -> None:
    async_to_sync(runs.manager.tick)()


def finish(message: Message, status=Message.Status.COMPLETE, content="An answer") -> None:
    Message.objects.filter(pk=message.pk).update(status=status, content=content)
    message.refresh_from_db()


def test_sweeper_ends_a_run_whose_lease_lapsed(conversation):
    """An active answer with an expired lease is ended `interrupted`, its checkpoint kept."""
    sent = services.message_send(conversation=conversation, content="Hi")
    Message.objects.filter(pk=sent.assistant_message.pk).update(
        status=Message.Status.STREAMING,
        content="Partial",
        run_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    tick()
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.INTERRUPTED
    assert message.content == "Partial"
    assert message.error_code == "run_lost"
    assert message.completed_at is not None


def test_a_swept_answer_records_estimated_usage(conversation):
    """The run's usage report died with it: the sweeper stores the input as the send would
    have estimated it and the output estimated from the text kept, marked as estimates."""
    sent = services.message_send(conversation=conversation, content="Hi there, model")
    Message.objects.filter(pk=sent.assistant_message.pk).update(
        status=Message.Status.STREAMING,
        content="A partial answer that streamed",
        run_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    tick()
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.INTERRUPTED
    assert message.output_tokens == estimate_tokens("A partial answer that streamed")
    assert message.input_tokens >= estimate_tokens("Hi there, model") > 0
    assert message.usage_estimated is True


def test_sweeper_keeps_the_buffers_longer_text(conversation):
    """Text that reached viewers after the last checkpoint is saved from the replay buffer."""
    sent = services.message_send(conversation=conversation, content="Hi")
    mid = str(sent.assistant_message.pk)
    Message.objects.filter(pk=mid).update(
        status=Message.Status.STREAMING,
        content="Part",
        run_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    buffer = get_replay_buffer()
    async_to_sync(buffer.start)(mid, {"message": {"id": mid}})
    async_to_sync(buffer.append)(mid, "Partial answer")
    tick()
    assert Message.objects.get(pk=mid).content == "Partial answer"


def test_sweeper_leaves_live_leases_alone(conversation):
    """An answer whose lease is current is not touched."""
    sent = services.message_send(conversation=conversation, content="Hi")
    tick()
    assert Message.objects.get(pk=sent.assistant_message.pk).status == Message.Status.PENDING


def test_stopped_orphan_ends_cancelled(conversation):
    """A stop asked of a run that died ends the answer `cancelled`, not `interrupted`."""
    sent = services.message_send(conversation=conversation, content="Hi")
    Message.objects.filter(pk=sent.assistant_message.pk).update(
        cancel_requested=True, run_lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    tick()
    assert Message.objects.get(pk=sent.assistant_message.pk).status == Message.Status.CANCELLED


def test_cancel_flags_an_active_answer_and_is_idempotent(conversation):
    """Stop marks the answer; stopping a stopped answer returns it; a finished one is 409."""
    sent = services.message_send(conversation=conversation, content="Hi")
    services.message_cancel(message=sent.assistant_message)
    assert Message.objects.get(pk=sent.assistant_message.pk).cancel_requested
    finish(sent.assistant_message, Message.Status.CANCELLED)
    assert services.message_cancel(message=sent.assistant_message).status == "cancelled"
    finish(sent.assistant_message, Message.Status.COMPLETE)
    with pytest.raises(MessageFinished):
        services.message_cancel(message=sent.assistant_message)
    with pytest.raises(NotAnAnswer):
        services.message_cancel(message=sent.user_message)


def test_a_stop_before_the_run_starts_ends_it_cancelled(conversation, settings, monkeypatch):
    """A run stopped before its first step (its coroutine never ran) still ends its answer
    `cancelled`, without calling the model."""
    settings.CHAT_PROVIDER = {
        "BACKEND": "chat.providers.scripted.ScriptedProvider",
        "OPTIONS": {"deltas": ["never"]},
    }
    jobs = []
    monkeypatch.setattr(runs.manager, "start", jobs.append)
    sent = services.message_send(conversation=conversation, content="Hi")

    async def start_then_stop_at_once():
        task = await runs.manager.astart(jobs[0])
        assert runs.manager.stop_local(str(sent.assistant_message.pk), StopReason.USER)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runs.manager.wait(5)  # the run that ends it

    async_to_sync(start_then_stop_at_once)()
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert (message.status, message.content) == (Message.Status.CANCELLED, "")
    assert get_provider().requests == []


def test_regenerate_answers_the_same_turn_and_keeps_the_old_answer(conversation):
    """A regenerated answer replies to the same user message; the model does not see the old one."""
    first = services.message_send(conversation=conversation, content="Q1")
    finish(first.assistant_message, content="A1")
    second = services.message_send(conversation=conversation, content="Q2")
    finish(second.assistant_message, content="A2 (bad)")
    again = services.message_regenerate(message=second.assistant_message)
    assert again.reply_to_id == second.user_message.pk
    assert Message.objects.filter(pk=second.assistant_message.pk).exists()
    history = selectors.message_history_for_run(message=again)
    assert [(t.role, t.content) for t in history] == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
    ]


def test_history_uses_the_latest_answer_of_a_regenerated_turn(conversation):
    """Later turns see only the newest answer to a regenerated question."""
    first = services.message_send(conversation=conversation, content="Q1")
    finish(first.assistant_message, content="old")
    retry = services.message_regenerate(message=first.assistant_message)
    finish(retry, content="new")
    nxt = services.message_send(conversation=conversation, content="Q2")
    history = selectors.message_history_for_run(message=nxt.assistant_message)
    assert [(t.role, t.content) for t in history] == [
        ("user", "Q1"),
        ("assistant", "new"),
        ("user", "Q2"),
    ]


def test_regenerate_refusals(conversation):
    """A running answer and user messages cannot be regenerated."""
    first = services.message_send(conversation=conversation, content="Q1")
    with pytest.raises(RunActive):
        services.message_regenerate(message=first.assistant_message)
    finish(first.assistant_message)
    with pytest.raises(NotAnAnswer):
        services.message_regenerate(message=first.user_message)


def test_an_older_answer_can_be_regenerated_and_sees_only_its_branch(conversation):
    """Regenerating an answer that is not the newest (the reader is on an older branch)
    adds a sibling to it, whose model input is the path to its question, nothing later."""
    first = services.message_send(conversation=conversation, content="Q1")
    finish(first.assistant_message, content="A1")
    second = services.message_send(conversation=conversation, content="Q2")
    finish(second.assistant_message, content="A2")
    retry = services.message_regenerate(message=first.assistant_message)
    assert retry.reply_to_id == first.user_message.pk
    history = selectors.message_history_for_run(message=retry)
    assert [(t.role, t.content) for t in history] == [("user", "Q1")]


def expire(message: Message, **fields) -> None:
    Message.objects.filter(pk=message.pk).update(
        status=Message.Status.STREAMING,
        run_lease_expires_at=timezone.now() - timedelta(seconds=1),
        **fields,
    )


def test_sweeper_stores_buffered_text_with_nul_characters(conversation):
    """An orphan whose buffered text holds NUL (which PostgreSQL rejects) still ends, with
    U+FFFD in its place: one bad text never leaves an answer `streaming`."""
    sent = services.message_send(conversation=conversation, content="Hi")
    mid = str(sent.assistant_message.pk)
    expire(sent.assistant_message, content="Pa")
    buffer = get_replay_buffer()
    async_to_sync(buffer.start)(mid, {"message": {"id": mid}})
    async_to_sync(buffer.append)(mid, "Pa\x00rtial")
    tick()
    message = Message.objects.get(pk=mid)
    assert (message.status, message.content) == ("interrupted", "Pa\ufffdrtial")


def test_one_orphan_that_cannot_be_saved_does_not_block_the_others(
    conversation, other_user, monkeypatch
):
    """The sweeper handles each orphan on its own: a row whose save keeps failing is
    logged, and the next orphan is still ended."""
    bad = services.message_send(conversation=conversation, content="Hi").assistant_message
    other = services.conversation_create(owner=other_user)
    good = services.message_send(conversation=other, content="Hi").assistant_message
    expire(bad, content="x")
    expire(good, content="y")
    original = store.save_final

    async def failing_for_bad(message_id, **fields):
        if message_id == str(bad.pk):
            raise RuntimeError("this row cannot be written")
        return await original(message_id, **fields)

    monkeypatch.setattr(store, "save_final", failing_for_bad)
    tick()
    assert Message.objects.get(pk=good.pk).status == Message.Status.INTERRUPTED
    assert Message.objects.get(pk=bad.pk).status == Message.Status.STREAMING


def test_a_checkpoint_reports_runs_whose_answers_ended_elsewhere(conversation, other_user):
    """One statement saves every run's text; answers no longer active are not written
    and are reported, so their runs stop."""
    live = services.message_send(conversation=conversation, content="Hi").assistant_message
    other = services.conversation_create(owner=other_user)
    ended = services.message_send(conversation=other, content="Hi").assistant_message
    finish(ended, Message.Status.INTERRUPTED, content="kept")
    lost = async_to_sync(store.save_checkpoints)({str(live.pk): "new", str(ended.pk): "late"})
    assert lost == {str(ended.pk)}
    live.refresh_from_db()
    ended.refresh_from_db()
    assert (live.status, live.content) == ("streaming", "new")
    assert (ended.status, ended.content) == ("interrupted", "kept")
