"""Editing a sent message end to end: a real daphne process with `AnthropicProvider` -> real
SDK -> the fake Anthropic server, whose `/_fake/stats` shows the request it received."""

from __future__ import annotations

import httpx
import pytest

from chat.models import Message

from .client import ChatApi, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(daphne_anthropic, user, password) -> ChatApi:
    return ChatApi(daphne_anthropic.url, user.username, password)


def upstream_turns(fake_anthropic) -> list[tuple[str, str]]:
    request = httpx.get(f"{fake_anthropic.url}/_fake/stats", timeout=5).json()["last_request"]
    return [
        (m["role"], c if isinstance(c := m["content"], str) else "".join(p["text"] for p in c))
        for m in request["messages"]
    ]


def test_an_edit_streams_a_new_answer_sent_the_edited_branch(api, fake_anthropic):
    """Editing the second question streams a new answer whose model input is the edited
    branch, without the old question or its answer; a send naming the old answer then
    continues the old branch, and the model sees that one."""
    conversation = api.create_conversation()
    cid = conversation["id"]
    q1, q2 = f"One {fake(text='A1', tps=0)}", f"Two {fake(text='A2', tps=0)}"
    api.send_and_read(cid, q1)
    old_answer, _ = api.send_and_read(cid, q2)
    old_question = Message.objects.get(pk=old_answer).reply_to_id

    edited_text = f"Two, better {fake(text='A2 edited', tps=40)}"
    with api.stream(cid) as stream:
        response = api.http.post(
            f"/api/v1/messages/{old_question}/edit/", json={"content": edited_text}
        )
        assert response.status_code == 201, response.text
        edited = response.json()
        new_answer = edited["assistant_message"]["id"]
        read = stream.read(until_end_of=new_answer)

    assert read.text(new_answer) == "A2 edited"
    assert read.of("message_end")[-1][1]["status"] == "complete"
    assert wait_for_final(new_answer).content == "A2 edited"
    assert upstream_turns(fake_anthropic) == [
        ("user", q1),
        ("assistant", "A1"),
        ("user", edited_text),
    ]
    assert edited["user_message"]["parent"] == str(Message.objects.get(pk=old_question).parent_id)

    # Back on the first branch: a send that names its answer continues it.
    q3 = f"Three {fake(text='A3', tps=0)}"
    response = api.http.post(
        f"/api/v1/conversations/{cid}/messages/", json={"content": q3, "parent": old_answer}
    )
    assert response.status_code == 201, response.text
    assert wait_for_final(response.json()["assistant_message"]["id"]).content == "A3"
    assert upstream_turns(fake_anthropic) == [
        ("user", q1),
        ("assistant", "A1"),
        ("user", q2),
        ("assistant", "A2"),
        ("user", q3),
    ]
