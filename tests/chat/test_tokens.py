"""SSE stream tokens: minted by the API, scoped to one conversation, useless anywhere else."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from chat.conf import chat_settings
from chat.services import conversation_create
from chat.tokens import CONVERSATION_CLAIM, StreamToken, TokenError

pytestmark = pytest.mark.django_db


def stream_url(conversation_id) -> str:
    return f"/stream/conversations/{conversation_id}/"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """`response` is a JSON error with `status` and string `code` and `message`."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    assert body["message"]
    if code is not None:
        assert body["code"] == code
    return body


def assert_stream_opens(response) -> None:
    """`response` is the start of an event stream; it is closed without being consumed."""
    try:
        assert response.status_code == 200, getattr(response, "content", b"")
        assert response["Content-Type"] == "text/event-stream"
    finally:
        response.close()


def open_stream(client, conversation_id, token: str | None = None, **params):
    if token is not None:
        params["token"] = token
    return client.get(stream_url(conversation_id), params)


def stream_token(user, conversation) -> str:
    return str(StreamToken.for_conversation(user=user, conversation=conversation))


def b64url(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- minting ---------------------------------------------------------------------------


def test_api_mints_a_stream_token(api_client, user, conversation):
    """The API mints 201 `{token, expires_in, stream_url}`; the URL names the conversation."""
    response = api_client.post(f"/api/v1/conversations/{conversation.pk}/stream-token/")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "expires_in", "stream_url"}
    assert isinstance(body["expires_in"], int)
    assert 0 < body["expires_in"] <= 300
    assert body["stream_url"] == f"/stream/conversations/{conversation.pk}/?token={body['token']}"


def test_minted_token_is_an_sse_token_for_the_conversation(api_client, user, conversation):
    """The minted token has type `sse`, names the user and the conversation, and expires on time."""
    before = timezone.now()
    body = api_client.post(f"/api/v1/conversations/{conversation.pk}/stream-token/").json()
    token = StreamToken(body["token"])
    assert token["token_type"] == "sse"
    assert token[CONVERSATION_CLAIM] == str(conversation.pk)
    assert token.conversation_id == str(conversation.pk)
    assert token.user_id == str(user.pk)
    expires = before.timestamp() + body["expires_in"]
    assert expires - 1 <= token["exp"] <= expires + 5


def test_minted_stream_url_opens_the_stream(api_client, client, conversation):
    """The `stream_url` from the API opens the event stream without a session."""
    body = api_client.post(f"/api/v1/conversations/{conversation.pk}/stream-token/").json()
    assert_stream_opens(client.get(body["stream_url"]))


def test_lifetime_follows_the_setting(api_client, conversation, settings):
    """`expires_in` and the token's expiry follow `CHAT_STREAM_TOKEN_LIFETIME_SECONDS` at
    mint time."""
    settings.CHAT_STREAM_TOKEN_LIFETIME_SECONDS = 30
    before = timezone.now().timestamp()
    body = api_client.post(f"/api/v1/conversations/{conversation.pk}/stream-token/").json()
    assert body["expires_in"] == 30
    assert before + 29 <= StreamToken(body["token"])["exp"] <= before + 35


def test_default_lifetime_is_minutes_not_hours():
    """Stream tokens live a few minutes at most."""
    assert 0 < chat_settings.STREAM_TOKEN_LIFETIME_SECONDS <= 300


def test_each_mint_is_a_distinct_token(api_client, conversation):
    """Two mints give two different tokens (each has its own `jti`)."""
    url = f"/api/v1/conversations/{conversation.pk}/stream-token/"
    first = api_client.post(url).json()["token"]
    second = api_client.post(url).json()["token"]
    assert first != second
    assert StreamToken(first)["jti"] != StreamToken(second)["jti"]


def test_stream_token_refuses_other_token_types(user):
    """An access or refresh token does not pass as a `StreamToken`."""
    for other in (AccessToken.for_user(user), RefreshToken.for_user(user)):
        with pytest.raises(TokenError):
            StreamToken(str(other))


# --- the SSE endpoint accepts exactly the right token ------------------------------------


def test_valid_token_opens_the_stream(client, user, conversation):
    """A valid stream token opens the stream: 200 `text/event-stream`."""
    assert_stream_opens(open_stream(client, conversation.pk, stream_token(user, conversation)))


def test_access_token_is_not_a_stream_token(client, user, conversation):
    """An API access token passed as `?token=` is a 401."""
    token = str(AccessToken.for_user(user))
    assert_error(open_stream(client, conversation.pk, token), 401, "stream_token_invalid")


def test_refresh_token_is_not_a_stream_token(client, user, conversation):
    """A refresh token passed as `?token=` is a 401."""
    token = str(RefreshToken.for_user(user))
    assert_error(open_stream(client, conversation.pk, token), 401, "stream_token_invalid")


def test_expired_stream_token_is_401(client, user, conversation):
    """An expired stream token is a 401."""
    token = StreamToken.for_conversation(user=user, conversation=conversation)
    token.set_exp(from_time=timezone.now() - timedelta(minutes=10), lifetime=timedelta(minutes=2))
    assert_error(open_stream(client, conversation.pk, str(token)), 401, "stream_token_invalid")


def test_token_for_another_conversation_is_401(client, user, conversation):
    """A token for conversation A does not open conversation B, even for the same owner."""
    other = conversation_create(owner=user, title="B")
    token = stream_token(user, conversation)
    assert_error(open_stream(client, other.pk, token), 401, "stream_token_invalid")


def test_token_for_an_unknown_conversation_is_401(client, user, conversation):
    """A valid token used on a conversation id that does not exist is a 401."""
    token = stream_token(user, conversation)
    assert_error(open_stream(client, uuid.uuid4(), token), 401, "stream_token_invalid")


def test_token_without_conversation_claim_is_401(client, user, conversation):
    """A stream token that names no conversation opens none."""
    token = str(StreamToken.for_user(user))
    assert_error(open_stream(client, conversation.pk, token), 401, "stream_token_invalid")


def test_token_for_someone_elses_conversation_is_404(client, other_user, conversation):
    """A token naming another user's conversation is a 404, as for a session."""
    token = stream_token(other_user, conversation)
    assert_error(open_stream(client, conversation.pk, token), 404, "not_found")


def test_token_for_a_deleted_conversation_is_404(client, user, conversation):
    """A token for a conversation deleted since it was minted is a 404."""
    token = stream_token(user, conversation)
    conversation_id = conversation.pk
    conversation.delete()
    assert_error(open_stream(client, conversation_id, token), 404, "not_found")


def test_token_of_an_inactive_user_is_401(client, user, conversation):
    """A stream token stops working once its user is deactivated."""
    token = stream_token(user, conversation)
    user.is_active = False
    user.save()
    assert_error(open_stream(client, conversation.pk, token), 401, "stream_token_invalid")


def test_token_made_before_a_password_change_is_401(client, user, conversation):
    """A stream token stops working once its user's password changes; one minted after
    the change works."""
    token = stream_token(user, conversation)
    user.set_password("a-brand-new-passphrase-7")
    user.save()
    assert_error(open_stream(client, conversation.pk, token), 401, "stream_token_invalid")
    assert_stream_opens(open_stream(client, conversation.pk, stream_token(user, conversation)))


def test_session_from_before_a_password_change_opens_no_stream(client, user, conversation):
    """A session made before the user's password changed no longer opens a stream."""
    client.force_login(user)
    user.set_password("a-brand-new-passphrase-7")
    user.save()
    assert_error(open_stream(client, conversation.pk), 401, "stream_token_invalid")


def test_bad_token_is_refused_despite_a_session(client, user, conversation):
    """A token that is given must be valid: the session does not rescue a bad token."""
    client.force_login(user)
    assert_error(open_stream(client, conversation.pk, "garbage"), 401, "stream_token_invalid")


@pytest.mark.parametrize(
    "raw", ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."], ids=["empty", "word", "dots", "x"]
)
def test_malformed_token_is_401(client, conversation, raw):
    """A token that is not a JWT at all is a 401."""
    assert_error(open_stream(client, conversation.pk, raw), 401, "stream_token_invalid")


def test_token_with_altered_signature_is_401(client, user, conversation):
    """Changing a stream token's signature makes it a 401."""
    header, payload, signature = stream_token(user, conversation).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    tampered = f"{header}.{payload}.{flipped}"
    assert_error(open_stream(client, conversation.pk, tampered), 401, "stream_token_invalid")


def test_token_with_swapped_payload_is_401(client, user, conversation):
    """Rewriting the conversation claim without re-signing makes the token a 401."""
    other = conversation_create(owner=user, title="B")
    token = StreamToken.for_conversation(user=user, conversation=conversation)
    header, _, signature = str(token).split(".")
    payload = {**token.payload, CONVERSATION_CLAIM: str(other.pk)}
    forged = f"{header}.{b64url(payload)}.{signature}"
    assert_error(open_stream(client, other.pk, forged), 401, "stream_token_invalid")


@pytest.mark.parametrize(
    ("key", "algorithm", "status"),
    [
        pytest.param(None, "HS256", 200, id="our-key"),
        pytest.param("a-different-secret-key-of-enough-length", "HS256", 401, id="other-key"),
        pytest.param(None, "none", 401, id="alg-none"),
    ],
)
def test_only_tokens_signed_with_our_key_are_accepted(
    client, user, conversation, key, algorithm, status
):
    """A re-signed payload is accepted only with our key and algorithm (no `alg: none`)."""
    token = StreamToken.for_conversation(user=user, conversation=conversation)
    if algorithm == "none":
        raw = jwt.encode(token.payload, None, algorithm="none")
    else:
        raw = jwt.encode(token.payload, key or django_settings.SECRET_KEY, algorithm=algorithm)
    response = open_stream(client, conversation.pk, raw)
    if status == 200:
        assert_stream_opens(response)
    else:
        assert_error(response, status, "stream_token_invalid")


# --- a stream token is useless against the API -------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/conversations/", "/api/v1/conversations/{id}/"], ids=["list", "detail"]
)
def test_stream_token_is_not_an_api_access_token(user, conversation, path):
    """A stream token used as `Authorization: Bearer` on the API is a 401."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {stream_token(user, conversation)}")
    response = client.get(path.format(id=conversation.pk))
    assert_error(response, 401, "token_not_valid")


def test_stream_token_cannot_mint_more_tokens(user, conversation):
    """A stream token cannot authenticate the stream-token endpoint."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {stream_token(user, conversation)}")
    response = client.post(f"/api/v1/conversations/{conversation.pk}/stream-token/")
    assert_error(response, 401, "token_not_valid")


def test_stream_token_is_not_a_refresh_token(user, conversation):
    """A stream token cannot be exchanged for an access token."""
    response = APIClient().post(
        "/api/v1/auth/token/refresh/",
        {"refresh": stream_token(user, conversation)},
        format="json",
    )
    assert_error(response, 401, "token_not_valid")


# --- resume position ----------------------------------------------------------------------


MESSAGE_ID = "0b9c4a43-67a1-4a8b-9d0e-2a5a1c0e7f11"


@pytest.mark.parametrize(
    "last_event_id",
    [
        "garbage",
        f"{MESSAGE_ID}",
        f"{MESSAGE_ID}:",
        f"{MESSAGE_ID}:-1",
        f"{MESSAGE_ID}:abc",
        f"{MESSAGE_ID}:1.5",
        "not-a-uuid:5",
        ":5",
    ],
)
def test_malformed_last_event_id_query_is_400(client, user, conversation, last_event_id):
    """A malformed `last_event_id` query parameter with a valid token is a JSON 400."""
    response = open_stream(
        client, conversation.pk, stream_token(user, conversation), last_event_id=last_event_id
    )
    assert_error(response, 400, "invalid_last_event_id")


def test_malformed_last_event_id_header_is_400(client, user, conversation):
    """A malformed `Last-Event-ID` header with a valid token is a JSON 400."""
    response = client.get(
        stream_url(conversation.pk),
        {"token": stream_token(user, conversation)},
        headers={"Last-Event-ID": "nonsense"},
    )
    assert_error(response, 400, "invalid_last_event_id")


@pytest.mark.parametrize("position", ["0", "42", "end"])
def test_well_formed_last_event_id_opens_the_stream(client, user, conversation, position):
    """A well-formed resume position (`<message id>:<offset>` or `:end`) opens the stream."""
    response = open_stream(
        client,
        conversation.pk,
        stream_token(user, conversation),
        last_event_id=f"{MESSAGE_ID}:{position}",
    )
    assert_stream_opens(response)


def test_bad_token_is_refused_before_the_resume_position_is_read(client, conversation):
    """With both a bad token and a bad `last_event_id`, the answer is the 401."""
    response = open_stream(client, conversation.pk, "garbage", last_event_id="nonsense")
    assert_error(response, 401, "stream_token_invalid")
