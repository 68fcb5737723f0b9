"""The generation run: every message reaches a final status with its text saved."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from chat import events, runs
from chat.context import estimate_tokens
from chat.events import ConversationDeleted, MessageEnded, MessageStarted, TextAppended
from chat.fanout import fanout
from chat.models import Conversation, Message
from chat.providers import ChatTurn, ProviderError, StreamEnd, TextDelta, get_provider
from chat.replay import get_replay_buffer
from chat.runs import store
from chat.services import conversation_delete, message_send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def script(settings):
    """Configure the scripted provider; returns a function taking the script."""

    def configure(deltas, fail_with=None, **options):
        settings.CHAT_PROVIDER = {
            "BACKEND": "chat.providers.scripted.ScriptedProvider",
            "OPTIONS": {"deltas": deltas, "fail_with": fail_with, **options},
        }
        return get_provider()

    return configure


# The jobs sends prepared, by message id (what `manager.start` would have started).
jobs: dict[str, runs.RunJob] = {}


@pytest.fixture
def sent(conversation, monkeypatch):
    """A sent message whose run has not started yet."""
    monkeypatch.setattr(runs.manager, "start", lambda job: jobs.__setitem__(job.message_id, job))
    return message_send(conversation=conversation, content="Hi there")


def drain(queue: asyncio.Queue) -> list:
    received = []
    while not queue.empty():
        received.extend(queue.get_nowait())  # each item is one batch of events
    return received


def run_and_listen(message_id: str, conversation_id) -> list:
    """Run to completion while subscribed to the conversation group; return what was published."""

    async def go():
        # Subscribed the way a stream is: through the process's fan-out.
        queue = await fanout.subscribe(events.conversation_group(conversation_id))
        await (await runs.manager.astart(jobs[message_id]))
        return drain(queue)

    return async_to_sync(go)()


def test_complete_run_stores_text_status_and_usage(script, sent, conversation):
    """A run that streams to the end stores the whole text, `complete`, stop reason and usage."""
    provider = script(["Hel", "lo ", "world"])
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.content == "Hello world"
    assert message.status == Message.Status.COMPLETE
    assert message.stop_reason == "end_turn"
    assert (message.input_tokens, message.output_tokens) == (7, 3)
    assert message.completed_at is not None
    assert [type(p) for p in published] == [
        MessageStarted,
        TextAppended,
        TextAppended,
        TextAppended,
        MessageEnded,
    ]
    assert [p.start for p in published if type(p) is TextAppended] == [0, 3, 6]
    assert published[-1].data["status"] == "complete"
    assert published[-1].length == len("Hello world")
    # The model saw the conversation so far: the user's message.
    assert [(t.role, t.content) for t in provider.requests[0].messages] == [("user", "Hi there")]


def test_upstream_error_before_any_text_is_failed(script, sent, conversation):
    """No text and an upstream error: `failed`, with the error stored and published."""
    script([], fail_with=ProviderError("upstream_overloaded", "Overloaded", True, 529))
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_overloaded"
    assert published[-1].error["retryable"] is True
    assert published[-1].data["status"] == "failed"


def test_upstream_error_after_text_is_interrupted_and_keeps_text(script, sent, conversation):
    """Some text then an upstream error: `interrupted`, the partial text kept."""
    script(
        ["Partial ", "answer"], fail_with=ProviderError("upstream_disconnected", "Dropped", True)
    )
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.INTERRUPTED
    assert message.content == "Partial answer"
    assert message.error_code == "upstream_disconnected"
    assert message.stop_reason == ""


def test_a_broken_answer_keeps_the_input_tokens_the_model_reported(script, sent, conversation):
    """The model reports the input's size when its stream starts: an answer that breaks
    before its end stores that (it counts against the daily budget), and its output
    estimated from the text that streamed, marked as an estimate."""
    script(["Partial answer, "] * 3, fail_with=ProviderError("upstream_disconnected", "Dropped"))
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.INTERRUPTED
    assert (message.input_tokens, message.output_tokens) == (7, estimate_tokens(message.content))
    assert message.output_tokens > 0
    assert message.usage_estimated is True
    assert published[-1].data["usage"] == {
        "input_tokens": 7,
        "output_tokens": message.output_tokens,
        "estimated": True,
    }


def test_a_complete_answers_usage_is_the_models_report(script, sent, conversation):
    script(["Hel", "lo"])
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert (message.input_tokens, message.output_tokens, message.usage_estimated) == (7, 2, False)
    assert published[-1].data["usage"]["estimated"] is False


def test_without_any_report_the_input_is_the_sends_estimate(script, sent, conversation):
    """A model that said nothing of its usage before the answer broke: the input is what the
    send estimated for the request (the history it fitted to the context window)."""
    script(["Some text"], input_tokens=None, fail_with=ProviderError("upstream_error", "Bad"))
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    job = jobs[str(message.pk)]
    assert job.input_tokens_estimate >= estimate_tokens("Hi there") > 0
    assert message.input_tokens == job.input_tokens_estimate
    assert message.output_tokens == estimate_tokens("Some text")
    assert message.usage_estimated is True


def test_an_answer_that_never_reached_the_model_used_nothing(script, sent, conversation):
    """Failed before the model said or sent anything (every try refused): 0 in, 0 out."""
    script([], input_tokens=None, fail_with=ProviderError("upstream_overloaded", "Busy", True))
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.FAILED
    assert (message.input_tokens, message.output_tokens) == (0, 0)


def test_a_stopped_answer_keeps_the_input_tokens_the_model_reported(script, sent, conversation):
    """Stopped mid-answer, the answer still says what its input and output cost."""
    script(["word "] * 200, delay=0.01)
    message_id = str(sent.assistant_message.pk)

    async def go():
        queue = await fanout.subscribe(events.conversation_group(conversation.pk))
        task = await runs.manager.astart(jobs[message_id])
        while not any(type(event) is TextAppended for event in await queue.get()):
            pass  # the answer has started: its text is arriving
        runs.manager.stop_local(message_id)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async_to_sync(go)()
    message = Message.objects.get(pk=message_id)
    assert message.status == Message.Status.CANCELLED
    assert message.content.startswith("word ")
    # The output is estimated from what streamed before the stop.
    assert message.input_tokens == 7
    assert message.output_tokens == estimate_tokens(message.content) > 0
    assert message.usage_estimated is True


def test_a_bug_in_the_provider_still_ends_the_message(script, sent, conversation):
    """An unexpected exception is not left `streaming`: the message ends `interrupted`."""
    script(["Some text"], fail_with=RuntimeError("boom"))
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.INTERRUPTED
    assert message.error_code == "internal_error"
    assert message.content == "Some text"


def test_replay_buffer_holds_text_and_end(script, sent, conversation):
    """After the run, the buffer has the full text and the final event for reconnecting clients."""
    script(["a", "b", "c"])
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    snapshot = async_to_sync(get_replay_buffer().get)(str(sent.assistant_message.pk))
    assert snapshot.text == "abc"
    assert snapshot.end["status"] == "complete"


def test_nul_characters_are_stored_as_replacement_characters(script, sent, conversation, settings):
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD as it arrives, one character for
    one, so checkpoints and the final save succeed and viewers see what is stored."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0.01
    script(["a\x00b", "\x00", "c"], delay=0.03)
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert (message.status, message.content) == ("complete", "a\ufffdb\ufffdc")
    assert "".join(p.text for p in published if type(p) is TextAppended) == message.content
    # The next send is not refused as if an answer were still streaming.
    assert message_send(conversation=conversation, content="again").assistant_message


@pytest.fixture
def saved_checkpoints(monkeypatch) -> list[dict]:
    saved = []
    original = store.save_checkpoints

    async def counting(texts, *args):
        saved.append(dict(texts))
        return await original(texts, *args)

    monkeypatch.setattr(store, "save_checkpoints", counting)
    return saved


def test_an_answer_shorter_than_the_interval_is_saved_once(
    script, sent, conversation, settings, saved_checkpoints
):
    """No checkpoint at all within the first interval: the final save has everything."""
    settings.CHAT_CHECKPOINT_INTERVAL = 3600
    script([f"t{i} " for i in range(50)])
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    assert saved_checkpoints == []
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.content.endswith("t49 ")
    assert message.status == Message.Status.COMPLETE


def test_checkpoints_are_throttled_to_one_per_interval(
    script, sent, conversation, settings, saved_checkpoints
):
    """20 deltas 10 ms apart, interval 50 ms: a checkpoint per ~5 deltas, not one per delta."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    script([f"t{i} " for i in range(20)], delay=0.01)
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    assert 1 <= len(saved_checkpoints) <= 5, saved_checkpoints
    # Each checkpoint holds all the text so far: a prefix of the final text.
    final = Message.objects.get(pk=sent.assistant_message.pk).content
    texts = [t for batch in saved_checkpoints for t in batch.values()]
    assert all(final.startswith(text) for text in texts)


def test_checkpoints_of_all_runs_share_one_statement(conversation, settings, saved_checkpoints):
    """Three runs streaming at once are checkpointed together, one save per interval."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    settings.CHAT_PROVIDER = {
        "BACKEND": "chat.providers.scripted.ScriptedProvider",
        "OPTIONS": {"deltas": [f"t{i} " for i in range(15)], "delay": 0.01},
    }
    started = []
    jobs_here = []
    conversations = [
        Conversation.objects.create(owner=conversation.owner, model="m") for _ in range(3)
    ]

    async def go():
        for job in jobs_here:
            started.append(await runs.manager.astart(job))
        await asyncio.gather(*started)

    runs.manager.start, original = jobs_here.append, runs.manager.start
    try:
        answers = [
            message_send(conversation=c, content="Hi").assistant_message for c in conversations
        ]
    finally:
        runs.manager.start = original
    async_to_sync(go)()
    assert any(len(batch) == 3 for batch in saved_checkpoints), saved_checkpoints
    assert all(Message.objects.get(pk=a.pk).status == Message.Status.COMPLETE for a in answers)


def test_a_send_prepares_its_run_so_it_starts_without_touching_the_database(sent, conversation):
    """Sent once the process has its channel, the answer is born leased to it, and the send
    hands the run its history: the run needs no claim UPDATE and no read before the model."""
    async_to_sync(fanout.start)()  # the process's channel: a lease's owner
    other = Conversation.objects.create(owner=conversation.owner, model="m", system_prompt="Be")
    answer = message_send(conversation=other, content="Hi").assistant_message
    assert answer.run_owner == runs.manager.channel
    job = jobs[str(answer.pk)]
    assert not job.needs_claim
    # "m" is not offered: the default model answers (chat/catalog.py: model_for_run).
    assert (job.request.model, job.request.system) == ("demo", "Be")
    assert job.request.messages == [ChatTurn(role="user", content="Hi")]


def test_an_answer_records_its_model_and_is_sent_that_models_limits(
    sent, conversation, settings, two_models
):
    """The answer records the model its run uses; the request asks for that model's
    `max_output_tokens` (capped by `CHAT_MAX_TOKENS`) and the message_start says the model."""
    Conversation.objects.filter(pk=conversation.pk).update(model="model-b")
    conversation.refresh_from_db()
    Message.objects.filter(pk=sent.assistant_message.pk).update(status=Message.Status.COMPLETE)
    answer = message_send(conversation=conversation, content="Again").assistant_message
    job = jobs[str(answer.pk)]
    assert Message.objects.get(pk=answer.pk).model == "model-b"
    assert (job.request.model, job.request.max_tokens) == ("model-b", 1000)
    assert job.start["message"]["model"] == "model-b"
    settings.CHAT_MAX_TOKENS = 300
    Message.objects.filter(pk=answer.pk).update(status=Message.Status.COMPLETE)
    answer = message_send(conversation=conversation, content="Once more").assistant_message
    assert jobs[str(answer.pk)].request.max_tokens == 300


def test_an_answer_sent_without_an_owner_is_claimed_by_its_run(script, sent, conversation):
    """Sent before the process had its channel (no owner): the run takes the lease itself."""
    script(["x"])
    Message.objects.filter(pk=sent.assistant_message.pk).update(run_owner="")
    jobs[str(sent.assistant_message.pk)].needs_claim = True
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    answer = Message.objects.get(pk=sent.assistant_message.pk)
    assert (answer.run_owner, answer.content) == (runs.manager.channel, "x")


def test_checkpoint_makes_partial_text_visible_while_streaming(
    sent, conversation, settings, monkeypatch
):
    """Text streamed so far reaches the database while the answer is still streaming."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0.01
    seen = []

    class Spy:
        async def stream(self, request):
            for text in ["one ", "two "]:
                yield TextDelta(text)
                await asyncio.sleep(0.1)
                seen.append(await Message.objects.aget(pk=sent.assistant_message.pk))
            yield StreamEnd()

    monkeypatch.setattr("chat.runs.run.get_provider", Spy)
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    assert seen[0].status == Message.Status.STREAMING
    assert [m.content for m in seen] == ["one ", "one two "]


def test_a_run_that_cannot_claim_its_answer_does_nothing(script, sent, conversation):
    """An ownerless answer that ended (or was claimed) before its run began is not run."""
    Message.objects.filter(pk=sent.assistant_message.pk).update(run_owner="", status="cancelled")
    jobs[str(sent.assistant_message.pk)].needs_claim = True
    provider = script(["y"])
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    assert provider.requests == []
    assert Message.objects.get(pk=sent.assistant_message.pk).content == ""


def test_deleting_a_conversation_stops_its_run_and_tells_its_streams(script, sent, conversation):
    """Deleted while it streams: the run stops at once (its upstream closes), and the
    conversation's streams get `message_end` (cancelled, with the reason) and the deletion."""
    provider = script([f"t{i} " for i in range(100)], delay=0.02)
    message_id = str(sent.assistant_message.pk)

    async def go():
        queue = await fanout.subscribe(events.conversation_group(conversation.pk))
        task = await runs.manager.astart(jobs[message_id])
        await asyncio.sleep(0.15)
        await asyncio.to_thread(conversation_delete, conversation=conversation)
        await asyncio.wait([task], timeout=2)
        assert task.done()
        await asyncio.sleep(0.05)
        return drain(queue)

    published = async_to_sync(go)()
    ends = [p for p in published if type(p) is MessageEnded]
    assert len(ends) == 1
    assert ends[0].data["status"] == "cancelled"
    assert ends[0].error["code"] == "conversation_deleted"
    assert type(published[-1]) is ConversationDeleted
    assert len(provider.requests) == 1
    assert not Message.objects.filter(pk=message_id).exists()


def test_the_run_stores_when_its_first_text_came(script, sent, conversation, settings, monkeypatch):
    """The first non-empty delta's time is `first_token_at`: written by the first checkpoint
    (with the `streaming` status) and kept by the final save; an empty delta before it is
    not text."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    script(["", "first "] + [f"t{i} " for i in range(10)], delay=0.05)
    first_tokens = []
    original = store.save_checkpoints

    async def capturing(texts, first=None):
        first_tokens.append(dict(first or {}))
        return await original(texts, first)

    monkeypatch.setattr(store, "save_checkpoints", capturing)
    message_id = str(sent.assistant_message.pk)
    run_and_listen(message_id, conversation.pk)
    message = Message.objects.get(pk=message_id)
    assert message.first_token_at is not None
    # Two 50 ms delays before the first text ("" came first).
    ttft = (message.first_token_at - message.created_at).total_seconds()
    assert 0.09 <= ttft < (message.completed_at - message.created_at).total_seconds()
    assert first_tokens, "no checkpoint was saved"
    assert {at for batch in first_tokens for at in batch.values()} == {message.first_token_at}


def test_an_answer_shorter_than_the_interval_stores_its_first_text_time_at_the_end(
    script, sent, conversation, settings, saved_checkpoints
):
    settings.CHAT_CHECKPOINT_INTERVAL = 3600
    script(["a", "b"])
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert saved_checkpoints == []
    assert message.created_at < message.first_token_at <= message.completed_at


def test_an_answer_without_text_has_no_first_token_time(script, sent, conversation):
    script([], fail_with=ProviderError("upstream_overloaded", "Busy.", True))
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert (message.status, message.first_token_at) == ("failed", None)


def test_a_checkpoint_keeps_the_first_text_time_it_stored(sent):
    """Checkpoints store `first_token_at` only where none is stored: one statement for all
    runs, whatever each run sends."""
    message_id = str(sent.assistant_message.pk)
    first = timezone.now()
    async_to_sync(store.save_checkpoints)({message_id: "a"}, {message_id: first})
    later = first + timedelta(seconds=5)
    async_to_sync(store.save_checkpoints)({message_id: "ab"}, {message_id: later})
    async_to_sync(store.save_checkpoints)({message_id: "abc"}, {message_id: None})
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.content) == ("streaming", "abc")
    assert message.first_token_at == first
