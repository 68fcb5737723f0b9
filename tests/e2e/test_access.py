"""A user's access ends everywhere at once: deactivation and password changes end their open
streams and refuse their tokens; refresh tokens rotate and a reused one is refused.

Two kinds of server: a pair of processes sharing PostgreSQL and Redis with a 60 s heartbeat,
so a stream that ends within seconds was ended by the change's broadcast and not by the
per-process check; and one process with a 1 s heartbeat, for changes the ORM never saw
(a queryset `update()`), which only that check can find.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.contrib.auth.hashers import make_password

from chat.models import Message
from tests.conftest import Server, cluster_env, stop

from .admin import AdminClient
from .client import ChatApi, OpenStream, StreamRead, fake, wait_for_final

# After each test Django flushes every table and re-creates the content types under new
# ids, but a running server caches them, and its admin logs every change against them (a
# foreign key): the second admin save of a server would fail. So these tests leave
# contenttypes out of their apps, and that table (and its ids) stays as it is.
pytestmark = pytest.mark.django_db(
    transaction=True,
    available_apps=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.sessions",
        "rest_framework_simplejwt.token_blacklist",
        "accounts",
        "chat",
    ],
)

# Far beyond any bound below: only the broadcast can end a stream in time on these servers.
SLOW_HEARTBEAT_SECONDS = 60
# How long a revoked stream may take to end (the 1 s heartbeat, a query, a loaded machine).
END_WITHIN_SECONDS = 12.0
ADMIN_PASSWORD = "admin-pw-not-secret-1"
NEW_PASSWORD = "a-brand-new-passphrase-7"


@pytest.fixture(scope="module")
def pair(start_daphne, fake_anthropic, redis_server) -> Iterator[tuple[Server, Server]]:
    """Two processes of one site (PostgreSQL + Redis), heartbeats every 60 s; stopped after
    this module, so their sweepers touch no later test's answers."""
    env = {
        **cluster_env(fake_anthropic, redis_server),
        # Not meant to die: a lease no stall of a loaded machine outlasts.
        "CHAT_RUN_LEASE_SECONDS": "30",
        "CHAT_SSE_HEARTBEAT_SECONDS": str(SLOW_HEARTBEAT_SECONDS),
    }
    servers = start_daphne(**env), start_daphne(**env)
    yield servers
    for server in servers:
        stop(server.process)


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", ADMIN_PASSWORD)


def obtain_pair(server: Server, username: str, password: str) -> dict:
    response = httpx.post(
        f"{server.url}/api/v1/auth/token/", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return response.json()


def refresh(server: Server, token: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/auth/token/refresh/", json={"refresh": token})


def read_until_closed(stream: OpenStream, within: float = END_WITHIN_SECONDS) -> StreamRead:
    """Every event until the server ends the stream, which it must do within `within` s.

    Read on a thread: the stream's `: ping` comments (every second on some servers) are
    no events, so a reader waiting for the next event could wait forever.
    """
    read = StreamRead()

    def consume() -> None:
        with contextlib.suppress(httpx.HTTPError):  # closed under it: see below
            for sse in stream.events:
                if sse.data:
                    read.events.append((sse.event, json.loads(sse.data), sse.id))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(within)
    if reader.is_alive():
        # Shutting the socket down wakes the reader's blocked receive.
        network = stream.source.response.extensions["network_stream"]
        with contextlib.suppress(OSError):
            network.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        reader.join(5)
        raise AssertionError(f"the stream was still open after {within} s: {read.events}")
    return read


def assert_ended_by_revocation(read: StreamRead) -> None:
    name, data, _ = read.events[-1]
    assert (name, data["code"], data["message_id"]) == ("error", "auth_revoked", None), read.events
    assert data["retryable"] is False
    assert data["message"]


def assert_json_401(response: httpx.Response, code: str | None = None) -> dict:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_deactivation_in_the_admin_ends_the_users_streams_on_every_process_at_once(
    pair, admin, user, other_user, password
):
    """Unticking "Active" in the admin (process A) ends the user's open streams on A and B
    within seconds (heartbeats are 60 s apart), each with `error` `auth_revoked` as its last
    event; from then on the old stream URL, the access token, minting a stream token and the
    refresh token are all 401. Another user's stream stays open and keeps streaming."""
    a, b = pair
    tokens = obtain_pair(a, user.username, password)
    api_a, api_b = ChatApi(a.url, user.username, password), ChatApi(b.url, user.username, password)
    conversation = api_a.create_conversation()["id"]
    bystander = ChatApi(b.url, other_user.username, password)
    their_conversation = bystander.create_conversation()["id"]
    stream_url = api_b.stream_url(conversation)

    with (
        api_a.stream(conversation, timeout=END_WITHIN_SECONDS) as on_a,
        api_b.stream(conversation, timeout=END_WITHIN_SECONDS, url=stream_url) as on_b,
        bystander.stream(their_conversation, timeout=END_WITHIN_SECONDS) as theirs,
    ):
        AdminClient(a.url, admin.username, ADMIN_PASSWORD).deactivate(user.pk)

        assert_ended_by_revocation(read_until_closed(on_a))
        assert_ended_by_revocation(read_until_closed(on_b))

        answer = bystander.send(their_conversation, f"Still here? {fake(tokens=3, tps=0)}")
        assistant = answer["assistant_message"]["id"]
        assert theirs.read(until_end_of=assistant).of("message_end")

    assert_json_401(httpx.get(b.url + stream_url), "stream_token_invalid")
    assert_json_401(api_a.http.get("/api/v1/conversations/"), "user_inactive")
    assert_json_401(api_b.http.post(f"/api/v1/conversations/{conversation}/stream-token/"))
    assert_json_401(refresh(a, tokens["refresh"]), "no_active_account")


def test_a_deactivated_users_running_answer_finishes_and_is_saved(pair, admin, user, password):
    """Deactivating a user mid-answer ends their stream (`auth_revoked`) but not the run: the
    answer is generated to its end and saved `complete`, never left `streaming`."""
    a, _ = pair
    api = ChatApi(a.url, user.username, password)
    conversation = api.create_conversation()["id"]
    with api.stream(conversation, timeout=END_WITHIN_SECONDS) as stream:
        sent = api.send(conversation, f"Long one {fake(tokens=60, tps=20)}")
        assistant = sent["assistant_message"]["id"]
        assert stream.read(max_events=2).of("delta")  # the answer is under way
        AdminClient(a.url, admin.username, ADMIN_PASSWORD).deactivate(user.pk)
        read = read_until_closed(stream)
    assert_ended_by_revocation(read)
    assert not read.of("message_end")  # the stream ended before the answer did

    message = wait_for_final(assistant, timeout=20.0)
    assert message.status == Message.Status.COMPLETE
    assert message.output_tokens == 60


def test_a_password_change_in_the_admin_ends_streams_and_every_earlier_token(
    pair, admin, user, password
):
    """Setting a new password in the admin (process B) ends the user's stream on A with
    `auth_revoked` within seconds; the access, stream and refresh tokens made before it are
    401 (`password_changed` for the API's), while the new password signs in and streams."""
    a, b = pair
    tokens = obtain_pair(a, user.username, password)
    api = ChatApi(a.url, user.username, password)
    conversation = api.create_conversation()["id"]
    stream_url = api.stream_url(conversation)

    with api.stream(conversation, timeout=END_WITHIN_SECONDS) as stream:
        AdminClient(b.url, admin.username, ADMIN_PASSWORD).set_password(user.pk, NEW_PASSWORD)
        assert_ended_by_revocation(read_until_closed(stream))

    assert_json_401(httpx.get(a.url + stream_url), "stream_token_invalid")
    assert_json_401(api.http.get("/api/v1/conversations/"), "password_changed")
    assert_json_401(refresh(b, tokens["refresh"]), "password_changed")

    fresh = ChatApi(b.url, user.username, NEW_PASSWORD)
    with fresh.stream(conversation) as stream:
        sent = fresh.send(conversation, f"Hello again {fake(tokens=2, tps=0)}")
        assert stream.read(until_end_of=sent["assistant_message"]["id"]).of("message_end")


def test_refresh_rotates_and_a_reused_refresh_token_is_401(pair, user, password):
    """A refresh returns a new access and a new refresh token; the refresh token it used is
    blacklisted, so using it again is a JSON 401, while the new one works."""
    a, b = pair
    first = obtain_pair(a, user.username, password)["refresh"]

    rotated = refresh(a, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh"]
    assert second != first
    access = rotated.json()["access"]
    listing = httpx.get(
        f"{b.url}/api/v1/conversations/", headers={"Authorization": f"Bearer {access}"}
    )
    assert listing.status_code == 200

    body = assert_json_401(refresh(b, first), "token_not_valid")
    assert "blacklisted" in body["message"]
    assert refresh(b, second).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"is_active": False}, id="deactivated"),
        pytest.param({"password": make_password(NEW_PASSWORD)}, id="password"),
    ],
)
def test_a_change_the_orm_never_saw_ends_streams_within_a_heartbeat(
    daphne_quick_heartbeat, django_user_model, user, password, change
):
    """A deactivation or a new password written with a queryset `update()` (no signal, as
    raw SQL or another service would) ends the user's open stream within about one
    heartbeat, found by the process's periodic check; a reconnect with the same stream
    token is 401."""
    server = daphne_quick_heartbeat
    api = ChatApi(server.url, user.username, password)
    conversation = api.create_conversation()["id"]
    stream_url = api.stream_url(conversation)
    with api.stream(conversation, timeout=END_WITHIN_SECONDS, url=stream_url) as stream:
        django_user_model.objects.filter(pk=user.pk).update(**change)
        assert_ended_by_revocation(read_until_closed(stream))
    assert_json_401(httpx.get(server.url + stream_url), "stream_token_invalid")


def test_the_check_leaves_streams_of_unchanged_users_open(
    daphne_quick_heartbeat, django_user_model, user, password
):
    """Saving a user without changing their access (a new e-mail address, with `update()`
    and with `save()`) ends none of their streams: they stay open across several checks."""
    server = daphne_quick_heartbeat
    api = ChatApi(server.url, user.username, password)
    conversation = api.create_conversation()["id"]
    with api.stream(conversation, timeout=END_WITHIN_SECONDS) as stream:
        django_user_model.objects.filter(pk=user.pk).update(email="alice@example.com")
        user.first_name = "Alice"
        user.save()
        time.sleep(3)  # three checks
        sent = api.send(conversation, f"Still open? {fake(tokens=2, tps=0)}")
        read = stream.read(until_end_of=sent["assistant_message"]["id"])
    assert read.of("message_end")
    assert not read.of("error")
