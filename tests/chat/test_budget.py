"""The per-user daily token budget: off by default; once a user's answers of the current UTC
day have used it, sends and regenerates get 429 `token_budget_exhausted` with `Retry-After`
until the next UTC midnight."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.utils import timezone

from chat import budget, selectors
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

EVENING = datetime(2026, 3, 10, 21, 0, tzinfo=UTC)


def spend(conversation: Conversation, input_tokens: int, output_tokens: int | None = 0) -> Message:
    """A finished exchange whose answer used these tokens, stored now (as a send stores it)."""
    now = timezone.now()
    question = Message.objects.create(
        conversation=conversation, role="user", content="Q", created_at=now, completed_at=now
    )
    conversation.save()  # a send saves its conversation after creating the answer
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="A",
        reply_to=question,
        created_at=now,
        completed_at=now,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def send(api_client, conversation):
    return api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "Hi"}, format="json"
    )


def test_the_budget_is_off_by_default(api_client, conversation):
    """Without `CHAT_DAILY_TOKEN_BUDGET` any amount of use is let through (and not counted)."""
    spend(conversation, 10_000_000, 10_000_000)
    assert send(api_client, conversation).status_code == 201


@pytest.mark.parametrize("off", [None, 0])
def test_an_unset_budget_costs_no_query(conversation, settings, off, django_assert_num_queries):
    """Off (None or 0): the check does not touch the database."""
    settings.CHAT_DAILY_TOKEN_BUDGET = off
    with django_assert_num_queries(0):
        budget.ensure_budget_left(user_id=conversation.owner_id)


def test_the_check_is_one_query(conversation, settings, django_assert_num_queries):
    """On: one aggregate query over the user's answers of the day."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 1_000
    spend(conversation, 10, 10)
    with django_assert_num_queries(1):
        budget.ensure_budget_left(user_id=conversation.owner_id)


def test_under_the_budget_a_send_is_accepted(api_client, conversation, settings):
    """One token left is enough to send."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 1_000
    spend(conversation, 600, 300)
    spend(conversation, 99, None)  # a stopped answer: its input counts, its output is unknown
    response = send(api_client, conversation)
    assert response.status_code == 201, response.content


def test_a_spent_budget_refuses_sends_with_429_retry_after_and_the_code(
    api_client, conversation, settings
):
    """Input plus output of the day's answers reach the budget: 429 with the API's error
    body, the seconds until the next UTC midnight in `Retry-After`, and nothing stored."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 1_000
    with time_machine.travel(EVENING, tick=False):
        spend(conversation, 600, 300)
        spend(conversation, 90, 10)
        response = send(api_client, conversation)

    assert response.status_code == 429
    assert response["Retry-After"] == "10800"  # 21:00 -> midnight UTC
    body = response.json()
    assert body["code"] == "token_budget_exhausted"
    assert body["message"] == (
        "You have used today's allowance of 1,000 tokens. You can send again after "
        "midnight UTC, in 3 h."
    )
    assert body["retry_after"] == 10_800
    assert body["resets_at"] == "2026-03-11T00:00:00Z"
    assert conversation.messages.count() == 4


def test_regenerate_is_refused_too(api_client, conversation, settings):
    """A regenerate is a new answer: refused the same way once the budget is spent."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 100
    answer = spend(conversation, 60, 40)
    response = api_client.post(f"/api/v1/messages/{answer.pk}/regenerate/")
    assert response.status_code == 429
    assert response.json()["code"] == "token_budget_exhausted"
    assert int(response["Retry-After"]) > 0
    assert conversation.messages.count() == 2


def test_the_budget_renews_at_utc_midnight(api_client, conversation, settings):
    """Spent at 23:59:30 UTC: refused for 30 seconds, whatever the site's time zone; from
    midnight UTC the day's count starts again and the send is accepted."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 1_000
    settings.TIME_ZONE = "America/New_York"
    with time_machine.travel(datetime(2026, 3, 10, 23, 59, 30, tzinfo=UTC), tick=False):
        spend(conversation, 1_000)
        refused = send(api_client, conversation)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "30"
    assert "in 1 min" in refused.json()["message"]

    with time_machine.travel(datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC), tick=False):
        accepted = send(api_client, conversation)
    assert accepted.status_code == 201, accepted.content


def test_only_the_users_own_answers_of_today_count(api_client, conversation, other_user, settings):
    """Yesterday's answers and other users' answers do not count against the budget."""
    settings.CHAT_DAILY_TOKEN_BUDGET = 1_000
    with time_machine.travel(datetime(2026, 3, 9, 23, 59, tzinfo=UTC), tick=False):
        spend(conversation, 5_000, 5_000)
    theirs = Conversation.objects.create(owner=other_user, model="m")
    with time_machine.travel(EVENING, tick=False):
        spend(theirs, 5_000, 5_000)
        spend(conversation, 500, 499)
        today = budget.day_start(timezone.now())
        assert selectors.tokens_used_since(user_id=conversation.owner_id, since=today) == 999
        response = send(api_client, conversation)
    assert response.status_code == 201, response.content
