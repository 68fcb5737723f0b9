"""The history sent to the model is cut to its context window: oldest whole exchanges first,
never the exchange being answered or the system prompt, and the answer says what was left out."""

from __future__ import annotations

import pytest

from chat import runs, services
from chat.context import (
    PER_MESSAGE_TOKENS,
    PER_REQUEST_TOKENS,
    context_tokens,
    estimate_tokens,
    fit_history,
    max_output_tokens,
)
from chat.errors import ContextTooLong
from chat.models import Message
from chat.providers import ChatTurn

# 1,000 ASCII characters: 400 estimated tokens, 408 with the message's framing.
LONG = "x" * 1000
EXCHANGE = 2 * (estimate_tokens(LONG) + PER_MESSAGE_TOKENS)  # a long question, a long answer


def history(exchanges: int) -> list[ChatTurn]:
    turns = []
    for n in range(exchanges):
        turns += [ChatTurn("user", f"{n}{LONG}"[:1000]), ChatTurn("assistant", f"{n}{LONG}"[:1000])]
    return [*turns, ChatTurn("user", "now?")]


def window_for(exchanges: int) -> int:
    """A context window that holds `exchanges` long exchanges, the new question, and no more."""
    return (
        100
        + PER_REQUEST_TOKENS
        + (estimate_tokens("now?") + PER_MESSAGE_TOKENS)
        + (exchanges * EXCHANGE)
    )


# --- the estimate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcde", 2),  # 2.5 ASCII characters a token
        ("abcdef", 3),  # rounded up
        ("é", 1),  # 2 bytes in UTF-8: 1 token
        ("日本語", 5),  # 9 bytes: 4.5, rounded up
        ("🙂", 2),  # 4 bytes
        ("ab日", 3),  # 0.8 + 1.5, rounded up
    ],
)
def test_the_estimate_counts_ascii_characters_and_other_characters_bytes(text, tokens):
    """A token per 2.5 ASCII characters and per 2 UTF-8 bytes of anything else, rounded up."""
    assert estimate_tokens(text) == tokens


def test_the_context_window_is_the_models_capped_by_the_setting(settings, two_models):
    """Each model's window is its `context_tokens`, capped by `CHAT_CONTEXT_TOKENS`; a model
    no longer offered gets the default model's."""
    assert (context_tokens("model-a"), context_tokens("model-b")) == (100_000, 50_000)
    assert context_tokens("claude-retired") == 100_000
    settings.CHAT_CONTEXT_TOKENS = 60_000
    assert (context_tokens("model-a"), context_tokens("model-b")) == (60_000, 50_000)


def test_an_answers_max_tokens_is_the_models_capped_by_the_setting(settings, two_models):
    settings.CHAT_MAX_TOKENS = 1500
    assert (max_output_tokens("model-a"), max_output_tokens("model-b")) == (1500, 1000)


# --- fitting the history -------------------------------------------------------------------


def test_a_history_that_fits_is_sent_whole(settings):
    """Nothing is left out while everything fits."""
    settings.CHAT_CONTEXT_TOKENS = window_for(3)
    window = fit_history(history(3), model="m", system="", max_tokens=100)
    assert window.messages == history(3)
    assert window.omitted_turns == 0


def test_the_oldest_whole_exchanges_are_dropped_first(settings):
    """Too long by a bit more than two exchanges: the first three are dropped, each with its
    answer, and the newest two and the question being answered are sent."""
    settings.CHAT_CONTEXT_TOKENS = window_for(2) + EXCHANGE // 2
    window = fit_history(history(5), model="m", system="", max_tokens=100)
    assert window.omitted_turns == 3
    assert window.messages == history(5)[6:]
    assert window.messages[0].role == "user" and window.messages[0].content.startswith("3")


def test_the_system_prompt_and_the_answers_allowance_come_off_the_budget(settings):
    """A system prompt as long as one exchange, or a larger `max_tokens`, leaves room for one
    exchange fewer."""
    settings.CHAT_CONTEXT_TOKENS = window_for(2)
    assert fit_history(history(2), model="m", system="", max_tokens=100).omitted_turns == 0
    system = "s" * (EXCHANGE * 5 // 2)
    assert fit_history(history(2), model="m", system=system, max_tokens=100).omitted_turns == 1
    bigger = 100 + EXCHANGE
    assert fit_history(history(2), model="m", system="", max_tokens=bigger).omitted_turns == 1


def test_an_unanswered_turn_is_an_exchange_of_its_own(settings):
    """A user turn whose answer failed empty is dropped (and counted) on its own."""
    settings.CHAT_CONTEXT_TOKENS = window_for(1)
    turns = [ChatTurn("user", LONG), *history(1)]
    window = fit_history(turns, model="m", system="", max_tokens=100)
    assert window.omitted_turns == 1
    assert window.messages == history(1)


def test_the_turn_being_answered_is_never_dropped(settings):
    """Room for nothing but the new question: it is sent alone, all earlier ones left out."""
    settings.CHAT_CONTEXT_TOKENS = window_for(0)
    window = fit_history(history(4), model="m", system="", max_tokens=100)
    assert window.messages == [ChatTurn("user", "now?")]
    assert window.omitted_turns == 4


def test_a_turn_too_long_on_its_own_is_refused(settings):
    """When the question alone does not fit, `ContextTooLong` (400) says how much room there is."""
    settings.CHAT_CONTEXT_TOKENS = 1_000
    with pytest.raises(ContextTooLong) as refused:
        fit_history([ChatTurn("user", "x" * 3_000)], model="m", system="", max_tokens=100)
    assert refused.value.status_code == 400
    assert refused.value.code == "context_too_long"
    assert "1,208 tokens" in refused.value.message  # 1,200 + the message's framing
    assert "884 are left" in refused.value.message  # 1,000 - 100 - 16


# --- sends: the job, the stored answer, the API ----------------------------------------------


@pytest.fixture
def jobs(monkeypatch) -> dict[str, runs.RunJob]:
    """The jobs sends hand to the run manager once they commit, by message id (no run
    starts)."""
    started: dict[str, runs.RunJob] = {}
    monkeypatch.setattr(runs.manager, "start", lambda job: started.__setitem__(job.message_id, job))
    return started


@pytest.fixture
def post(api_client, django_capture_on_commit_callbacks):
    """POST to the API as the conversation's owner; what the request commits runs its
    on-commit work (handing the job over) before this returns."""

    def post_(path: str, data: dict | None = None):
        with django_capture_on_commit_callbacks(execute=True):
            return api_client.post(path, data, format="json")

    return post_


def converse(conversation, exchanges: int) -> None:
    """`exchanges` finished long exchanges, stored as sends store them."""
    for n in range(exchanges):
        sent = services.message_send(conversation=conversation, content=f"{n}{LONG}"[:1000])
        Message.objects.filter(pk=sent.assistant_message.pk).update(
            status=Message.Status.COMPLETE, content=f"{n}{LONG}"[:1000]
        )


@pytest.mark.django_db
def test_a_long_conversations_job_keeps_the_system_prompt_and_the_newest_turns(
    conversation, jobs, settings, post
):
    """With a small context window the job sends the system prompt, the newest exchanges
    that fit and the new question; the answer (in the database, the API's 201 and the
    stream's `message_start`) says how many exchanges were left out."""
    settings.CHAT_MAX_TOKENS = 100
    conversation.system_prompt = "Be brief."
    conversation.save()
    converse(conversation, 5)
    settings.CHAT_CONTEXT_TOKENS = window_for(2) + estimate_tokens("Be brief.")

    response = post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "now?"})

    assert response.status_code == 201, response.content
    answer = response.json()["assistant_message"]
    assert answer["context_omitted_turns"] == 3
    assert Message.objects.get(pk=answer["id"]).context_omitted_turns == 3
    job = jobs[answer["id"]]
    assert job.request.system == "Be brief."
    assert job.request.messages == history(5)[6:]
    assert job.start["message"]["context_omitted_turns"] == 3


@pytest.mark.django_db
def test_answers_that_saw_everything_say_nothing_was_left_out(conversation, jobs, post):
    """With the default window a conversation is sent whole: `context_omitted_turns` is 0."""
    converse(conversation, 3)
    response = post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "now?"})
    answer = response.json()["assistant_message"]
    assert answer["context_omitted_turns"] == 0
    assert len(jobs[answer["id"]].request.messages) == 7


@pytest.mark.django_db
def test_regenerating_fits_the_history_too(conversation, jobs, settings, post):
    """A regenerated answer is sent the same cut history, and records it."""
    settings.CHAT_MAX_TOKENS = 100
    converse(conversation, 3)
    last = services.message_send(conversation=conversation, content="now?").assistant_message
    Message.objects.filter(pk=last.pk).update(status=Message.Status.COMPLETE, content="Soon.")
    settings.CHAT_CONTEXT_TOKENS = window_for(1)

    response = post(f"/api/v1/messages/{last.pk}/regenerate/")

    assert response.status_code == 201, response.content
    assert response.json()["context_omitted_turns"] == 2
    assert jobs[response.json()["id"]].request.messages == history(3)[4:]


@pytest.mark.django_db
def test_a_message_too_long_for_the_context_is_400_and_stores_nothing(
    conversation, jobs, settings, post
):
    """A question that cannot fit however much history is dropped is refused with the API's
    error body, and neither it nor an answer is stored."""
    settings.CHAT_CONTEXT_TOKENS = 1_000
    settings.CHAT_MAX_TOKENS = 100
    response = post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "x" * 3_000})
    assert response.status_code == 400
    assert response.json()["code"] == "context_too_long"
    assert "context window" in response.json()["message"]
    assert not conversation.messages.exists()
    assert not jobs


def test_the_default_length_limits_keep_any_message_within_the_default_window(settings):
    """With the defaults the 400 cannot happen: a message at the length limit, every
    character 4 bytes, under the longest system prompt, still fits."""
    from chat.api.views import ConversationInputSerializer
    from chat.conf import chat_settings

    system_limit = ConversationInputSerializer().fields["system_prompt"].max_length
    window = fit_history(
        [ChatTurn("user", "🙂" * chat_settings.MAX_MESSAGE_CHARS)],
        model="m",
        system="🙂" * system_limit,
        max_tokens=chat_settings.MAX_TOKENS,
    )
    assert window.omitted_turns == 0
