"""The context window and the daily token budget, end to end: a real daphne process with
`AnthropicProvider` -> real SDK -> the fake Anthropic server, whose `/_fake/stats` shows the
request the upstream received (see `daphne_bounded` in tests/conftest.py for the settings)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chat.models import Message
from tests.conftest import BOUNDED_ENV

from .client import ChatApi, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

BUDGET = int(BOUNDED_ENV["CHAT_DAILY_TOKEN_BUDGET"])


@pytest.fixture
def api(daphne_bounded, user, password) -> ChatApi:
    return ChatApi(daphne_bounded.url, user.username, password)


def upstream_request(fake_anthropic) -> dict:
    return httpx.get(f"{fake_anthropic.url}/_fake/stats", timeout=5).json()["last_request"]


def question(n: int) -> str:
    """About 1,000 estimated tokens: two fit the window beside the newest question, not three."""
    return f"Question {n} " + "x" * 2400


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def test_a_long_conversation_sends_the_newest_turns_and_says_how_many_were_left_out(
    api, fake_anthropic
):
    """Five long questions in a window that holds two: from the third on, the oldest whole
    exchanges are not sent upstream — the system prompt and the newest question always are —
    and each answer says how many were left out, in the send's 201, the stream's
    `message_start` and the history."""
    conversation = api.create_conversation(system_prompt="Be brief.")
    sent_counts, started_counts = [], []
    with api.stream(conversation["id"]) as stream:
        for n in range(5):
            content = f"{question(n)} {fake(text=f'Answer {n}.', tps=0)}"
            answer = api.send(conversation["id"], content)["assistant_message"]
            read = stream.read(until_end_of=answer["id"])
            sent_counts.append(answer["context_omitted_turns"])
            (start,) = read.of("message_start")
            started_counts.append(start[1]["message"]["context_omitted_turns"])
            assert read.of("message_end")[0][1]["status"] == "complete"

    assert sent_counts == started_counts == [0, 0, 1, 2, 3]
    upstream = upstream_request(fake_anthropic)
    assert upstream["system"] == "Be brief."
    assert [(m["role"], m["content"][:11]) for m in upstream["messages"]] == [
        ("user", "Question 3 "),
        ("assistant", "Answer 3."),
        ("user", "Question 4 "),
    ]
    history = api.http.get(f"/api/v1/conversations/{conversation['id']}/messages/").json()
    answers = [m for m in history["results"] if m["role"] == "assistant"]
    assert [m["context_omitted_turns"] for m in answers] == [0, 0, 1, 2, 3]


def test_a_message_too_long_for_the_window_is_refused_with_400(api):
    """A question that cannot fit on its own: 400 `context_too_long`, nothing stored."""
    conversation = api.create_conversation()
    response = api.http.post(
        f"/api/v1/conversations/{conversation['id']}/messages/", json={"content": "x" * 8000}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "context_too_long"
    assert not Message.objects.filter(conversation_id=conversation["id"]).exists()


def test_a_spent_daily_budget_refuses_sends_and_regenerates_with_429_until_utc_midnight(api):
    """Answers use the day's tokens (input + output, as the model reported them); once they
    reach the budget the next send and regenerate get 429 `token_budget_exhausted` with
    `Retry-After` counting down to the next UTC midnight."""
    conversation = api.create_conversation()
    used = 0
    last = None
    while used < BUDGET:
        last, _ = api.send_and_read(conversation["id"], f"Go {fake(tokens=120, tps=0)}")
        answer = wait_for_final(last)
        used += answer.input_tokens + answer.output_tokens
    assert answer.output_tokens == 120

    refused = api.http.post(
        f"/api/v1/conversations/{conversation['id']}/messages/", json={"content": "More?"}
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "token_budget_exhausted"
    assert f"allowance of {BUDGET:,} tokens" in refused.json()["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert abs(retry_after - seconds_to_utc_midnight()) < 60

    regenerate = api.http.post(f"/api/v1/messages/{last}/regenerate/")
    assert regenerate.status_code == 429
    assert regenerate.json()["code"] == "token_budget_exhausted"


def test_a_stopped_answer_counts_the_input_tokens_it_used(api):
    """Stopped mid-answer, the answer keeps the input tokens the model reported at its
    start (they count against the budget), and an estimate of the output that streamed."""
    conversation = api.create_conversation()
    with api.stream(conversation["id"]) as stream:
        answer = api.send(conversation["id"], f"Long one {fake(tokens=150, tps=20)}")
        answer_id = answer["assistant_message"]["id"]
        stream.read(max_events=3)  # message_start and two deltas: it is streaming
        stopped = api.http.post(f"/api/v1/messages/{answer_id}/cancel/")
        assert stopped.status_code == 200, stopped.text

    message = wait_for_final(answer_id)
    assert message.status == Message.Status.CANCELLED
    assert message.input_tokens == 3  # the fake counts the words it was sent
    assert message.output_tokens > 0
    assert message.usage_estimated is True
    assert stopped.json()["input_tokens"] == 3
    assert stopped.json()["output_tokens"] == message.output_tokens
