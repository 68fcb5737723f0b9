"""Several daphne processes on PostgreSQL and Redis serve one site: any process, any stream."""

from __future__ import annotations

import pytest

from chat.models import Message

from .client import ChatApi, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def apis(cluster, user, password) -> tuple[ChatApi, ChatApi]:
    a, b = cluster
    return ChatApi(a.url, user.username, password), ChatApi(b.url, user.username, password)


def test_message_posted_on_a_streams_from_b(apis):
    """A run owned by process A is streamed, live, to a client of process B."""
    a, b = apis
    text = "".join(f"b{i:02d} " for i in range(30))
    conv = a.create_conversation()
    with b.stream(conv["id"]) as stream:
        assistant_id = a.send(conv["id"], f"Hi {fake(text=text, tps=40)}")["assistant_message"][
            "id"
        ]
        read = stream.read(until_end_of=assistant_id)
    assert read.text(assistant_id) == text
    assert len(read.of("delta")) > 5
    assert wait_for_final(assistant_id).status == Message.Status.COMPLETE


def test_client_moving_from_a_to_b_mid_stream_resumes_exactly(apis):
    """Reading on A, then reconnecting to B with the last id: no gap, no duplicate."""
    a, b = apis
    text = "".join(f"m{i:02d} " for i in range(40))
    conv = a.create_conversation()
    with a.stream(conv["id"]) as stream:
        assistant_id = a.send(conv["id"], f"Hi {fake(text=text, tps=40)}")["assistant_message"][
            "id"
        ]
        first = stream.read(max_events=5)
    with b.stream(conv["id"], last_event_id=first.events[-1][2]) as stream:
        second = stream.read(until_end_of=assistant_id)
    assert second.of("message_start") == []
    assert first.text(assistant_id) + second.text(assistant_id) == text
