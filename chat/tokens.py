"""Short-lived SSE stream tokens.

`EventSource` cannot send an Authorization header, so the page puts a token in
the stream URL. That token is a simplejwt token of its own type (`sse`): it
opens one conversation's stream for a few minutes and nothing else.
`JWTAuthentication` only accepts `access` tokens, so it is useless against the
API, and an access token fails `StreamToken`'s type check.

A stream token names its user the way an access token does, and is checked the
same way (`user_for_token`, which is `JWTAuthentication.get_user`): the user must
exist and be active, and with `CHECK_REVOKE_TOKEN` still have the password the
token was minted under, so a deactivation or a password change refuses it.
"""

from __future__ import annotations

from datetime import timedelta

from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token, TokenError

from .conf import chat_settings

CONVERSATION_CLAIM = "conversation_id"


class StreamToken(Token):
    token_type = "sse"  # noqa: S105 (a JWT type name, not a secret)

    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        # Read per token, not at import: settings may change in tests and deployments.
        return timedelta(seconds=chat_settings.STREAM_TOKEN_LIFETIME_SECONDS)

    @classmethod
    def for_conversation(cls, *, user, conversation) -> StreamToken:
        token = cls.for_user(user)
        token[CONVERSATION_CLAIM] = str(conversation.pk)
        return token

    @property
    def user_id(self) -> str:
        return str(self.payload[api_settings.USER_ID_CLAIM])

    @property
    def conversation_id(self) -> str | None:
        return self.payload.get(CONVERSATION_CLAIM)


def user_for_token(token: Token):
    """The user `token` names, by the API's own rules (raises `AuthenticationFailed`)."""
    return JWTAuthentication().get_user(token)


__all__ = [
    "CONVERSATION_CLAIM",
    "AuthenticationFailed",
    "StreamToken",
    "TokenError",
    "user_for_token",
]
