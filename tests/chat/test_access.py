"""Which user changes are announced to every process, and what a process compares.

The streams these end are tested against real servers in tests/e2e/test_access.py.
"""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth.models import update_last_login

from chat import access
from chat.access import REVOKED, StreamAccess, credentials
from chat.fanout import Fanout

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced(monkeypatch) -> list[dict]:
    """The control messages broadcast to every process."""
    sent: list[dict] = []
    monkeypatch.setattr(access.fanout, "broadcast_soon", sent.append)
    return sent


def changed(user) -> list[dict]:
    return [{"type": "user.access", "user_id": str(user.pk)}]


def test_deactivation_is_announced_after_commit(
    user, announced, django_capture_on_commit_callbacks
):
    """Saving a deactivated user announces the user, once the transaction commits."""
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()
        assert announced == []
    assert announced == changed(user)


def test_a_password_change_is_announced(user, announced, django_capture_on_commit_callbacks):
    """`set_password()` + `save()` announces the user."""
    with django_capture_on_commit_callbacks(execute=True):
        user.set_password("a-brand-new-passphrase-7")
        user.save()
    assert announced == changed(user)


def test_a_deletion_is_announced(user, announced, django_capture_on_commit_callbacks):
    """Deleting a user announces them."""
    expected = changed(user)
    with django_capture_on_commit_callbacks(execute=True):
        user.delete()
    assert announced == expected


def test_logins_and_new_users_are_not_announced(
    django_user_model, user, announced, django_capture_on_commit_callbacks
):
    """A login's `last_login` update and a new user change nobody's access: no broadcast."""
    with django_capture_on_commit_callbacks(execute=True):
        update_last_login(None, user)
        django_user_model.objects.create_user(username="newcomer", password="x-long-pass-9")
    assert announced == []


def test_credentials_change_with_the_password_and_activity(user):
    """A stream's credentials differ after a password change and are None for an inactive
    user; other changes leave them as they were."""
    before = credentials(user)
    user.first_name = "Alice"
    assert credentials(user) == before
    user.set_password("a-brand-new-passphrase-7")
    assert credentials(user) not in (before, None)
    user.is_active = False
    assert credentials(user) is None


def test_the_check_reads_every_user_in_one_query(
    django_user_model, user, other_user, django_assert_num_queries
):
    """The per-heartbeat read of the streams' users is one query, whatever their number, and
    leaves out users that no longer exist."""
    gone = django_user_model.objects.create_user(username="gone", password="x-long-pass-9")
    gone_id = str(gone.pk)
    gone.delete()
    with django_assert_num_queries(1):
        found = access._read_credentials([str(user.pk), str(other_user.pk), gone_id])
    assert found == {str(user.pk): credentials(user), str(other_user.pk): credentials(other_user)}


@pytest.mark.django_db(transaction=True)
def test_check_ends_only_the_streams_whose_credentials_changed(user, other_user):
    """`check` puts REVOKED in the queues of streams opened under credentials that are no
    longer the user's, stops watching them, and leaves the other user's stream alone."""
    registry = StreamAccess(transport=Fanout())

    async def scenario() -> tuple[list, list, int]:
        alice, bob = asyncio.Queue(), asyncio.Queue()
        registry.watch(str(user.pk), credentials(user), alice)
        registry.watch(str(other_user.pk), credentials(other_user), bob)
        await asyncio.to_thread(type(user).objects.filter(pk=user.pk).update, is_active=False)
        ended = await registry.check()
        return [alice.get_nowait() for _ in range(alice.qsize())], list(bob._queue), ended

    alice_got, bob_got, ended = asyncio.run(scenario())
    assert (alice_got, bob_got, ended) == ([REVOKED], [], 1)
    assert registry.user_count == 1
