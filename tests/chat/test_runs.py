"""The generation run: every message reaches a final status with its text saved."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from chat import events, runs
from chat.fanout import fanout
from chat.models import Conversation, Message
from chat.providers import ChatTurn, ProviderError, StreamEnd, TextDelta, get_provider
from chat.replay import get_replay_buffer
from chat.services import message_send

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


@pytest.fixture
def sent(conversation, monkeypatch):
    """A sent message whose run has not started yet."""
    monkeypatch.setattr(runs, "start_run", lambda job: jobs.__setitem__(job.message_id, job))
    return message_send(conversation=conversation, content="Hi there")


# The jobs sends prepared, by message id (what `start_run` would have started).
jobs: dict[str, runs.RunJob] = {}


def run_and_listen(message_id: str, conversation_id) -> list[dict]:
    """Run to completion while subscribed to the conversation group; return what was published."""

    async def go():
        # Subscribed the way a stream is: through the process's fan-out.
        queue = await fanout.subscribe(events.conversation_group(conversation_id))
        await runs.generate(jobs[message_id])
        received = []
        while not queue.empty():
            received.append(queue.get_nowait())
        return received

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
    assert [p["event"] for p in published] == [
        "message_start",
        "delta",
        "delta",
        "delta",
        "message_end",
    ]
    assert [p["start"] for p in published if p["event"] == "delta"] == [0, 3, 6]
    assert published[-1]["data"]["status"] == "complete"
    assert published[-1]["length"] == len("Hello world")
    # The model saw the conversation so far: the user's message.
    assert [(t.role, t.content) for t in provider.requests[0].messages] == [("user", "Hi there")]


def test_upstream_error_before_any_text_is_failed(script, sent, conversation):
    """No text and an upstream error: `failed`, with the error stored and published."""
    script([], fail_with=ProviderError("upstream_overloaded", "Overloaded", True, 529))
    published = run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    message = Message.objects.get(pk=sent.assistant_message.pk)
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_overloaded"
    assert published[-1]["error"]["retryable"] is True
    assert published[-1]["data"]["status"] == "failed"


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


@pytest.fixture
def saved_checkpoints(monkeypatch) -> list[str]:
    saved = []
    original = runs._save_checkpoint

    async def counting(message_id, text):
        saved.append(text)
        return await original(message_id, text)

    monkeypatch.setattr(runs, "_save_checkpoint", counting)
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
    assert all(final.startswith(text) for text in saved_checkpoints)


def test_a_send_prepares_its_run_so_it_starts_without_touching_the_database(sent, conversation):
    """Sent once the process has its channel, the answer is born leased to it, and the send
    hands the run its history: the run needs no claim UPDATE and no read before the model."""
    from chat.supervisor import supervisor

    async_to_sync(fanout.start)()  # the process's channel: a lease's owner
    other = Conversation.objects.create(owner=conversation.owner, model="m", system_prompt="Be")
    answer = message_send(conversation=other, content="Hi").assistant_message
    assert answer.run_owner == supervisor.channel
    job = jobs[str(answer.pk)]
    assert not job.needs_claim
    assert (job.request.model, job.request.system) == ("m", "Be")
    assert job.request.messages == [ChatTurn(role="user", content="Hi")]


def test_an_answer_sent_without_an_owner_is_claimed_by_its_run(script, sent, conversation):
    """Sent before the process had its channel (no owner): the run takes the lease itself."""
    from chat.supervisor import supervisor

    script(["x"])
    Message.objects.filter(pk=sent.assistant_message.pk).update(run_owner="")
    jobs[str(sent.assistant_message.pk)].needs_claim = True
    run_and_listen(str(sent.assistant_message.pk), conversation.pk)
    answer = Message.objects.get(pk=sent.assistant_message.pk)
    assert (answer.run_owner, answer.content) == (supervisor.channel, "x")


def test_checkpoint_makes_partial_text_visible_while_streaming(
    sent, conversation, settings, monkeypatch
):
    """With a zero interval, each delta is in the database before the next one is read."""
    settings.CHAT_CHECKPOINT_INTERVAL = 0
    seen = []

    class Spy:
        async def stream(self, request):
            for text in ["one ", "two "]:
                yield TextDelta(text)
                seen.append(await Message.objects.aget(pk=sent.assistant_message.pk))
            yield StreamEnd()

    monkeypatch.setattr(runs, "get_provider", Spy)
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
