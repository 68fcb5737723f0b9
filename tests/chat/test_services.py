"""Services (writes) and selectors (reads) of the chat app."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from chat import runs, selectors, services
from chat.errors import ContentTooLong, NotFound, RunActive
from chat.models import Conversation, Message
from chat.providers import ChatTurn
from chat.tokens import StreamToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def started_runs(monkeypatch) -> list[str]:
    """Replace `runs.manager.start`; returns the message ids it was called with."""
    calls: list[str] = []
    monkeypatch.setattr(runs.manager, "start", lambda job: calls.append(job.message_id))
    return calls


def finish(message: Message, status: str = Message.Status.COMPLETE) -> None:
    Message.objects.filter(pk=message.pk).update(status=status, content="An answer.")


# --- conversations -------------------------------------------------------------------------


def test_conversation_create_uses_chat_model_by_default(user, settings, two_models):
    """A conversation without a model gets `settings.CHAT_MODEL` (an offered one), read at
    call time."""
    settings.CHAT_MODEL = "model-b"
    conversation = services.conversation_create(owner=user)
    assert conversation.model == "model-b"
    assert Conversation.objects.get(pk=conversation.pk).model == "model-b"


def test_conversation_create_stores_given_fields(user):
    """Owner, stripped title, system prompt and an explicit model are stored."""
    conversation = services.conversation_create(
        owner=user, title="  Plans  ", system_prompt="Be terse.", model="claude-other"
    )
    conversation.refresh_from_db()
    assert conversation.owner == user
    assert conversation.title == "Plans"
    assert conversation.system_prompt == "Be terse."
    assert conversation.model == "claude-other"


def test_conversation_update_changes_only_named_fields(conversation):
    """`conversation_update` sets the fields it is given and leaves the rest."""
    model = conversation.model
    services.conversation_update(conversation=conversation, title="Renamed")
    conversation.refresh_from_db()
    assert conversation.title == "Renamed"
    assert conversation.model == model


def test_conversation_delete_removes_messages(conversation, started_runs):
    """Deleting a conversation deletes its messages too."""
    services.message_send(conversation=conversation, content="hi")
    services.conversation_delete(conversation=conversation)
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


# --- message_send ------------------------------------------------------------------------------


def test_message_send_stores_both_messages(conversation):
    """A send stores the complete user message and an empty, pending assistant message."""
    result = services.message_send(conversation=conversation, content="Hello")
    user_message = Message.objects.get(pk=result.user_message.pk)
    assistant_message = Message.objects.get(pk=result.assistant_message.pk)
    assert user_message.role == Message.Role.USER
    assert user_message.status == Message.Status.COMPLETE
    assert user_message.content == "Hello"
    assert user_message.completed_at is not None
    assert assistant_message.role == Message.Role.ASSISTANT
    assert assistant_message.status == Message.Status.PENDING
    assert assistant_message.content == ""
    assert assistant_message.completed_at is None
    assert user_message.conversation == assistant_message.conversation == conversation


def test_message_list_orders_user_before_assistant(conversation):
    """`message_list` puts the user turn before its answer, every turn, in send order."""
    first = services.message_send(conversation=conversation, content="one")
    finish(first.assistant_message)
    second = services.message_send(conversation=conversation, content="two")
    ids = list(selectors.message_list(conversation=conversation).values_list("pk", flat=True))
    assert ids == [
        first.user_message.pk,
        first.assistant_message.pk,
        second.user_message.pk,
        second.assistant_message.pk,
    ]
    assert second.assistant_message.created_at > second.user_message.created_at


def test_message_send_raises_run_active_while_pending(conversation):
    """A send while an answer is pending raises `RunActive` and stores nothing."""
    services.message_send(conversation=conversation, content="first")
    with pytest.raises(RunActive) as excinfo:
        services.message_send(conversation=conversation, content="second")
    assert excinfo.value.status_code == 409
    assert excinfo.value.code == "run_active"
    assert conversation.messages.count() == 2


def test_message_send_raises_run_active_while_streaming(conversation):
    """A send while an answer is streaming raises `RunActive`."""
    result = services.message_send(conversation=conversation, content="first")
    Message.objects.filter(pk=result.assistant_message.pk).update(status=Message.Status.STREAMING)
    with pytest.raises(RunActive):
        services.message_send(conversation=conversation, content="second")


def test_database_constraint_settles_a_race(conversation, monkeypatch):
    """If the pre-check misses an active answer, the unique constraint still yields `RunActive`."""
    services.message_send(conversation=conversation, content="first")
    # Blind the pre-check, as a concurrent request that has not yet seen the row would be.
    monkeypatch.setattr(services.selectors, "message_active", lambda **kwargs: None)
    with pytest.raises(RunActive):
        services.message_send(conversation=conversation, content="racing")
    assert conversation.messages.count() == 2
    assert not conversation.messages.filter(content="racing").exists()


@pytest.mark.parametrize(
    "status",
    [
        Message.Status.COMPLETE,
        Message.Status.CANCELLED,
        Message.Status.FAILED,
        Message.Status.INTERRUPTED,
    ],
)
def test_message_send_after_a_final_status_is_accepted(conversation, status):
    """Any final status of the previous answer frees the conversation for the next send."""
    first = services.message_send(conversation=conversation, content="first")
    finish(first.assistant_message, status)
    services.message_send(conversation=conversation, content="second")
    assert conversation.messages.count() == 4


def test_message_send_raises_content_too_long_over_the_limit(conversation, settings):
    """Content over `CHAT_MAX_MESSAGE_CHARS` raises `ContentTooLong` and stores nothing."""
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    with pytest.raises(ContentTooLong) as excinfo:
        services.message_send(conversation=conversation, content="x" * 11)
    assert excinfo.value.status_code == 413
    assert excinfo.value.code == "content_too_long"
    assert not conversation.messages.exists()


def test_message_send_accepts_content_at_the_limit(conversation, settings):
    """Content of exactly `CHAT_MAX_MESSAGE_CHARS` characters is accepted."""
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    result = services.message_send(conversation=conversation, content="x" * 10)
    assert result.user_message.content == "x" * 10


def test_message_send_titles_an_untitled_conversation(user):
    """The first message titles an untitled conversation: whitespace collapsed, 60 chars."""
    conversation = services.conversation_create(owner=user)
    services.message_send(conversation=conversation, content="  word\n" * 30)
    conversation.refresh_from_db()
    assert conversation.title == " ".join(["word"] * 30)[:60]
    assert len(conversation.title) == 60


def test_message_send_keeps_an_existing_title(conversation):
    """A titled conversation keeps its title."""
    services.message_send(conversation=conversation, content="Something else")
    conversation.refresh_from_db()
    assert conversation.title == "Test chat"


def test_message_send_bumps_updated_at(conversation):
    """A send marks the conversation as updated."""
    past = timezone.now() - timedelta(hours=1)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=past)
    conversation.refresh_from_db()
    services.message_send(conversation=conversation, content="hi")
    conversation.refresh_from_db()
    assert conversation.updated_at > past + timedelta(minutes=59)


# --- the run starts after commit ---------------------------------------------------------------


def test_send_schedules_one_run_after_commit(
    conversation, started_runs, django_capture_on_commit_callbacks
):
    """A send starts exactly one run, for the assistant message, and only after commit."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.message_send(conversation=conversation, content="hi")
        assert started_runs == []
    assert len(callbacks) == 1
    assert started_runs == [str(result.assistant_message.pk)]


def test_refused_sends_schedule_no_run(
    conversation, settings, started_runs, django_capture_on_commit_callbacks
):
    """A send refused with `RunActive` or `ContentTooLong` starts no run."""
    services.message_send(conversation=conversation, content="first")
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RunActive):
            services.message_send(conversation=conversation, content="second")
        with pytest.raises(ContentTooLong):
            services.message_send(conversation=conversation, content="x" * 11)
    assert callbacks == []
    assert started_runs == []


# --- stream tokens -----------------------------------------------------------------------------


def test_stream_token_create_scopes_the_token(user, conversation):
    """`stream_token_create` returns a `sse` token for the user and the conversation."""
    token = services.stream_token_create(user=user, conversation=conversation)
    assert isinstance(token, StreamToken)
    assert token["token_type"] == "sse"
    assert token.user_id == str(user.pk)
    assert token.conversation_id == str(conversation.pk)


# --- selectors ---------------------------------------------------------------------------------


def test_conversation_list_holds_only_own_conversations(user, other_user, conversation):
    """`conversation_list` hides other users' conversations."""
    services.conversation_create(owner=other_user, title="theirs")
    assert list(selectors.conversation_list(user=user)) == [conversation]


def test_conversation_list_is_empty_for_anonymous(conversation):
    """An anonymous user sees no conversations."""
    assert not selectors.conversation_list(user=AnonymousUser()).exists()


def test_conversation_get_for_user_returns_own(user, conversation):
    """The owner gets their conversation, by UUID or by string id."""
    for conversation_id in (conversation.pk, str(conversation.pk)):
        found = selectors.conversation_get_for_user(user=user, conversation_id=conversation_id)
        assert found == conversation


@pytest.mark.parametrize("who", ["other", "anonymous", "unknown-id"])
def test_conversation_get_for_user_hides_others(other_user, user, conversation, who):
    """Another user's, an anonymous user's or a missing conversation all raise `NotFound`."""
    viewer = {"other": other_user, "anonymous": AnonymousUser(), "unknown-id": user}[who]
    conversation_id = uuid.uuid4() if who == "unknown-id" else conversation.pk
    with pytest.raises(NotFound) as excinfo:
        selectors.conversation_get_for_user(user=viewer, conversation_id=conversation_id)
    assert excinfo.value.status_code == 404
    assert excinfo.value.code == "not_found"


def test_aconversation_get_for_user_matches_the_sync_twin(user, other_user, conversation):
    """The async twin returns the owner's conversation and hides it from anyone else."""
    get = async_to_sync(selectors.aconversation_get_for_user)
    assert get(user=user, conversation_id=conversation.pk) == conversation
    with pytest.raises(NotFound):
        get(user=other_user, conversation_id=conversation.pk)


def test_message_active_finds_the_running_answer(conversation):
    """`message_active` returns the pending answer, and nothing once it is final."""
    assert selectors.message_active(conversation=conversation) is None
    result = services.message_send(conversation=conversation, content="hi")
    assert selectors.message_active(conversation=conversation) == result.assistant_message
    finish(result.assistant_message)
    assert selectors.message_active(conversation=conversation) is None


def test_history_for_run_is_earlier_turns_without_empty_answers(conversation):
    """The model sees earlier turns in order, minus empty answers and the message itself."""
    first = services.message_send(conversation=conversation, content="one")
    Message.objects.filter(pk=first.assistant_message.pk).update(
        status=Message.Status.FAILED, content=""
    )
    second = services.message_send(conversation=conversation, content="two")
    finish(second.assistant_message)
    third = services.message_send(conversation=conversation, content="three")
    history = selectors.message_history_for_run(message=third.assistant_message)
    assert history == [
        ChatTurn(role="user", content="one"),
        ChatTurn(role="user", content="two"),
        ChatTurn(role="assistant", content="An answer."),
        ChatTurn(role="user", content="three"),
    ]
