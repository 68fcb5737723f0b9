"""The process's metrics (chat/metrics.py) count what runs and streams really do."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from chat import events, metrics, runs
from chat.fanout import Batch, fanout
from chat.models import Message
from chat.providers import ProviderError, get_provider
from chat.services import message_send

from .test_relay import assistant, buffer, delta, make_relay  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def answer(conversation, settings, monkeypatch):
    """Runs a sent message's answer with the scripted provider to its end."""
    jobs = {}
    monkeypatch.setattr(runs.manager, "start", lambda job: jobs.__setitem__(job.message_id, job))

    def run(deltas, fail_with=None):
        settings.CHAT_PROVIDER = {
            "BACKEND": "chat.providers.scripted.ScriptedProvider",
            "OPTIONS": {"deltas": deltas, "fail_with": fail_with},
        }
        get_provider()
        sent = message_send(conversation=conversation, content="Hi there")
        job = jobs[str(sent.assistant_message.pk)]

        async def go():
            await (await runs.manager.astart(job))

        async_to_sync(go)()
        return Message.objects.get(pk=sent.assistant_message.pk)

    return run


def test_a_run_counts_its_start_tokens_first_token_and_end(answer):
    """Runs started and ended (by status), every delta relayed, one time-to-first-token."""
    before = {
        "started": value("chatsite_runs_started_total"),
        "complete": value("chatsite_runs_ended_total", status="complete"),
        "tokens": value("chatsite_tokens_relayed_total"),
        "ttft": value("chatsite_time_to_first_token_seconds_count"),
    }
    message = answer(["Hel", "lo ", "world"])
    assert message.status == Message.Status.COMPLETE
    assert value("chatsite_runs_started_total") == before["started"] + 1
    assert value("chatsite_runs_ended_total", status="complete") == before["complete"] + 1
    assert value("chatsite_tokens_relayed_total") == before["tokens"] + 3
    assert value("chatsite_time_to_first_token_seconds_count") == before["ttft"] + 1


def test_upstream_errors_and_interrupted_runs_are_counted_by_code(answer):
    """An answer broken by the model's API after some text counts an upstream error of its
    code and an interrupted run with that reason."""
    code = "upstream_disconnected"
    errors = value("chatsite_upstream_errors_total", code=code, retried="false")
    interrupted = value("chatsite_runs_interrupted_total", reason=code)
    message = answer(["Partial"], fail_with=ProviderError(code, "Dropped", True))
    assert message.status == Message.Status.INTERRUPTED
    assert value("chatsite_upstream_errors_total", code=code, retried="false") == errors + 1
    assert value("chatsite_runs_interrupted_total", reason=code) == interrupted + 1


def test_active_runs_and_open_streams_are_read_from_their_owners(conversation, monkeypatch):
    """The gauges are what the run manager and the fan-out hold at scrape time."""
    monkeypatch.setattr(runs.manager, "run_ids", lambda: ["a", "b", "c"])
    assert value("chatsite_active_runs") == 3

    async def go():
        group = events.conversation_group(conversation.pk)
        before = value("chatsite_open_streams")
        queue = await fanout.subscribe(group)
        during = value("chatsite_open_streams")
        fanout.unsubscribe(group, queue)
        return before, during, value("chatsite_open_streams")

    before, during, after = async_to_sync(go)()
    assert (during, after) == (before + 1, before)


def test_replay_reads_and_repaired_gaps_are_counted(conversation, assistant, buffer):  # noqa: F811
    """A stream that catches up reads the buffer (a hit); a live delta past what the
    client has is a gap, repaired from the buffer."""
    hits = value("chatsite_replay_buffer_reads_total", result="hit")
    gaps = value("chatsite_gaps_repaired_total")
    relay = make_relay(conversation, buffer)
    async_to_sync(relay.catch_up)(None)  # the client has "Hello"
    async_to_sync(buffer.append)(str(assistant.pk), " big world")
    async_to_sync(relay.on_event)(delta(assistant, 9, "world"))  # " big" never arrived
    assert value("chatsite_replay_buffer_reads_total", result="hit") == hits + 2
    assert value("chatsite_gaps_repaired_total") == gaps + 1


def test_relay_latency_is_observed_once_per_write_for_its_oldest_batch():
    """A stream's write is one observation: now minus when its oldest batch was emitted."""
    count = value("chatsite_relay_latency_seconds_count")
    slow = value("chatsite_relay_latency_seconds_bucket", le="0.5")
    metrics.relayed([None, Batch([], time.time() - 1.0), Batch([], time.time())])
    assert value("chatsite_relay_latency_seconds_count") == count + 1
    # The oldest batch, emitted a second ago, is what was observed.
    assert value("chatsite_relay_latency_seconds_bucket", le="0.5") == slow


def test_counting_a_token_costs_an_integer_increment():
    """The per-token hook adds to a plain integer (no lock), read at scrape time."""
    before = metrics.tokens_relayed()
    for _ in range(1000):
        metrics.token_relayed()
    assert metrics.tokens_relayed() == before + 1000
    assert value("chatsite_tokens_relayed_total") == before + 1000
