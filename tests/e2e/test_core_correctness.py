"""What the run core guarantees end to end, found probing the scale-out path: a deleted
conversation's streams end, a client that saw more than a crash let the database keep is
reset to the stored text, and a Redis outage is logged once, not once per token."""

from __future__ import annotations

import httpx
import pytest

from chat.models import Message
from tests.conftest import claude_env

from .client import ChatApi, fake, wait_for_final
from .test_failures import (
    ORPHAN_BOUND,
    READ_TIMEOUT,
    assistant_id_of,
    kill_and_reap,
    other_servers_paused,
    steady_env,
    terminate_quietly,
    words,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_deleting_a_conversation_ends_its_open_streams(claude_api):
    """Deleted while an answer streams: the stream gets `error` (conversation_deleted),
    `message_end` (cancelled) and `conversation_deleted`, then closes; the run is gone."""
    conv = claude_api.create_conversation()
    with claude_api.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
        sent = claude_api.send(conv["id"], f"Hi {fake(text=words('x', 200), tps=20)}")
        assistant_id = assistant_id_of(sent)
        assert viewer.read(max_events=3).text(assistant_id)
        assert claude_api.http.delete(f"/api/v1/conversations/{conv['id']}/").status_code == 204
        rest = []
        for sse in viewer.events:  # ends when the server closes the stream
            if sse.data:
                rest.append(sse.event)
    assert rest[-3:] == ["error", "message_end", "conversation_deleted"]
    assert not Message.objects.filter(pk=assistant_id).exists()
    refused = claude_api.http.post(f"/api/v1/conversations/{conv['id']}/stream-token/")
    assert refused.status_code == 404


def test_a_client_ahead_of_the_stored_text_after_a_crash_is_reset_to_it(
    start_daphne, fake_anthropic, user, password
):
    """One process, in-memory buffer, no checkpoint yet: it is SIGKILLed while a viewer
    has text the database never got. After a restart the answer is ended from what was
    stored, and the viewer's resume gets `reset` and exactly the stored text."""
    env = claude_env(
        fake_anthropic,
        CHAT_CHECKPOINT_INTERVAL="3600",
        CHAT_RUN_LEASE_SECONDS="2",
        CHAT_RUN_HEARTBEAT_SECONDS="0.5",
        CHAT_SWEEP_ORPHANS="1",
    )
    d = start_daphne(**env)
    api = ChatApi(d.url, user.username, password)
    conv = api.create_conversation()
    with api.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
        assistant_id = assistant_id_of(
            api.send(conv["id"], f"Hi {fake(text=words('k', 200), tps=20)}")
        )
        seen = viewer.read(max_events=6)
    last_id = seen.events[-1][2]
    assert int(last_id.rsplit(":", 1)[1]) > 0  # the viewer has some text

    e = None
    with other_servers_paused():
        try:
            kill_and_reap(d)
            e = start_daphne(**env)
            stored = wait_for_final(assistant_id, timeout=ORPHAN_BOUND)
            api_e = ChatApi(e.url, user.username, password)
            with api_e.stream(conv["id"], last_event_id=last_id, timeout=READ_TIMEOUT) as again:
                resumed = again.read(until_end_of=assistant_id)
        finally:
            if e is not None:
                terminate_quietly(e)
    assert stored.status == Message.Status.INTERRUPTED
    assert len(stored.content) < int(last_id.rsplit(":", 1)[1])
    names = [name for name, _, _ in resumed.events]
    assert names[:2] == ["reset", "message_start"]
    assert resumed.events[0][1]["reason"] == "position_beyond_text"
    assert resumed.text(assistant_id) == stored.content
    assert resumed.of("message_end")[0][1]["status"] == "interrupted"


def test_a_redis_outage_is_logged_once_not_per_token(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """Redis stops while an answer streams 80 more tokens: the run completes in the
    database and the log says once that run output cannot reach Redis."""
    g = start_daphne(**steady_env(fake_anthropic, private_redis))
    try:
        api = ChatApi(g.url, user.username, password)
        conv = api.create_conversation()
        text = words("o", 100)
        with api.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
            assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=20)}"))
            assert viewer.read(max_events=4).text(assistant_id)
            private_redis.stop()
            # The viewer's stream either closes (the client reconnects, as EventSource
            # does) or, fed in-process by the answering process, sees the answer end.
            # Either way the answer itself must not suffer.
            try:
                ends = viewer.read(until_end_of=assistant_id).of("message_end")
            except (httpx.TransportError, AssertionError):
                ends = []
        message = wait_for_final(assistant_id, timeout=15)
    finally:
        terminate_quietly(g)
        private_redis.start()
    assert (message.status, message.content) == (Message.Status.COMPLETE, text)
    assert [d["status"] for _, d, _ in ends] in ([], ["complete"])
    log = g.log.read_text()
    assert log.count("run output cannot reach Redis") == 1, log[-3000:]
