"""The operators' management commands: demo data, ending stale runs, purging replay buffers."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.utils import timezone

from chat.events import MessageEnded, MessageStarted, TextAppended
from chat.models import Conversation, Message
from chat.replay import RedisReplayBuffer

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def active(owner, *, lease_seconds: float, **fields) -> Message:
    conversation = Conversation.objects.create(owner=owner, model="m")
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content="Half an ans",
        run_owner="specific.gone.1.abc",
        run_lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
        **fields,
    )


# --- end_stale_runs ----------------------------------------------------------------------


def test_end_stale_runs_ends_answers_whose_lease_lapsed_and_says_which(user):
    """As the sweeper would: `interrupted` with `run_lost`, the stored text kept; a run
    whose lease is held is left alone."""
    stale = active(user, lease_seconds=-5)
    held = active(user, lease_seconds=60)
    out = run("end_stale_runs")
    stale.refresh_from_db()
    held.refresh_from_db()
    assert (stale.status, stale.error_code, stale.content) == (
        "interrupted",
        "run_lost",
        "Half an ans",
    )
    assert held.status == "streaming"
    assert f"{stale.pk} interrupted (run_lost) conversation {stale.conversation_id}" in out
    assert str(held.pk) not in out
    assert out.endswith("Ended 1 answer.\n")


def test_end_stale_runs_ends_every_stale_answer_not_only_a_sweeps_hundred(user):
    for _ in range(105):
        active(user, lease_seconds=-5)
    assert run("end_stale_runs").endswith("Ended 105 answers.\n")
    assert not Message.objects.filter(status__in=Message.ACTIVE_STATUSES).exists()


def test_end_stale_runs_all_stops_every_active_answer(user):
    """`--all`: each active answer is asked to stop (`cancel_requested`, as the stop button);
    one whose run does not answer within `--wait` is ended `cancelled` all the same."""
    held = active(user, lease_seconds=60)
    stale = active(user, lease_seconds=-5)
    out = run("end_stale_runs", "--all", "--wait", "0.2")
    held.refresh_from_db()
    stale.refresh_from_db()
    assert (held.status, held.error_code) == ("cancelled", "")
    assert held.cancel_requested_at is not None
    assert stale.status == "cancelled"
    assert out.endswith("Ended 2 answers.\n")


def test_end_stale_runs_with_nothing_to_do(user):
    assert run("end_stale_runs") == "Ended 0 answers.\n"


# --- purge_replay_buffers ----------------------------------------------------------------


def test_purging_an_in_memory_buffer_says_it_cannot(user):
    out = run("purge_replay_buffers")
    assert out.startswith("Nothing to purge: the replay buffer is in memory")


class Buffer:
    """The Redis buffer the command purges, each call on a client of its own (a Redis
    client belongs to the event loop it first ran on, and each `async_to_sync` has one)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, work):
        async def go():
            buffer = RedisReplayBuffer(url=self.url, prefix=PREFIX)
            try:
                return await work(buffer)
            finally:
                await buffer.aclose()

        return async_to_sync(go)()

    def get(self, message_id: str):
        return self.call(lambda buffer: buffer.get(message_id))

    def write(self, message_id: str, *, ended: bool) -> None:
        events = [MessageStarted(message_id, {"id": message_id}), TextAppended(message_id, 0, "Hi")]
        if ended:
            events.append(MessageEnded(message_id, 2, {"status": "complete"}, None))
        self.call(lambda buffer: buffer.write(events))


PREFIX = "test:purge:"


@pytest.fixture
def redis_buffer(settings, private_redis):
    settings.CHAT_REPLAY_BUFFER = {
        "BACKEND": "chat.replay.RedisReplayBuffer",
        "OPTIONS": {"url": private_redis.url, "prefix": PREFIX},
    }
    return Buffer(private_redis.url)


def test_purge_deletes_the_buffers_of_answers_no_longer_active(user, redis_buffer):
    """Ended and deleted answers lose their buffers (the database has their text); active
    ones keep theirs, and keys outside the buffer's prefix are not touched."""
    streaming = active(user, lease_seconds=60)
    ended = active(user, lease_seconds=60)
    Message.objects.filter(pk=ended.pk).update(status="complete")
    gone = "00000000-0000-4000-8000-000000000000"
    redis_buffer.write(str(streaming.pk), ended=False)
    redis_buffer.write(str(ended.pk), ended=True)
    redis_buffer.write(gone, ended=False)  # its conversation was deleted mid-answer
    redis_buffer.call(lambda buffer: buffer.redis.set("unrelated", "1"))

    assert run("purge_replay_buffers", "--dry-run") == (
        "Would delete the buffers of 2 of 3 buffered messages.\n"
    )
    assert redis_buffer.get(gone) is not None

    assert run("purge_replay_buffers") == "Deleted the buffers of 2 of 3 buffered messages.\n"
    assert redis_buffer.get(str(streaming.pk)).text == "Hi"
    for message_id in (str(ended.pk), gone):
        assert redis_buffer.get(message_id) is None
        text_key = f"{PREFIX}{message_id}:text"
        assert redis_buffer.call(lambda buffer, key=text_key: buffer.redis.exists(key)) == 0
    assert redis_buffer.call(lambda buffer: buffer.redis.get("unrelated")) == b"1"


# --- create_demo_data --------------------------------------------------------------------


def test_create_demo_data_makes_what_the_admin_and_page_must_show(settings):
    """Users, markdown answers, a regenerated answer, a failed and a stopped one; again, it
    changes nothing; `--reset` makes it anew."""
    settings.DEBUG = True
    out = run("create_demo_data")
    assert "Created 7 demo conversations" in out
    demo = Message.objects.filter(conversation__owner__username="demo")
    assert demo.filter(role="assistant", content__contains="```python").exists()
    assert demo.filter(status="failed").exclude(error_code="").exists()
    stopped = demo.get(status="cancelled")
    assert stopped.cancel_requested_at is not None and stopped.content
    regenerated = demo.filter(role="user", replies__isnull=False)
    assert any(turn.replies.count() == 2 for turn in regenerated)
    # Usage on more than one day, for more than one user.
    days = {m.created_at.date() for m in Message.objects.all()}
    assert len(days) >= 2
    assert Conversation.objects.values("owner").distinct().count() == 3

    count = Message.objects.count()
    assert "already there" in run("create_demo_data")
    assert Message.objects.count() == count
    assert "Created 7 demo conversations" in run("create_demo_data", "--reset")
    assert Message.objects.count() == count


def test_create_demo_data_refuses_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("create_demo_data")
    assert not Message.objects.exists()
