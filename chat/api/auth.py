"""The API's token refresh: simplejwt's, refusing what simplejwt 5.5 lets through.

With `CHECK_REVOKE_TOKEN`, 5.5 checks the password fingerprint when an access token is
used but not when a refresh token is: after a password change the old refresh token
still returned 200 with an access token that every call then refused with 401, so a
client that refreshes on 401 looped. A refresh token of a deleted user was a 500.
Both are fixed upstream (jazzband/djangorestframework-simplejwt#928, unreleased when
this was written); drop this class once the pinned simplejwt has it.
"""

from __future__ import annotations

import contextlib

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt import serializers
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password


class TokenRefreshSerializer(serializers.TokenRefreshSerializer):
    def validate(self, attrs: dict) -> dict:
        refresh = self.token_class(attrs["refresh"])  # TokenError: the view answers 401
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], code="no_active_account"
            )
        if api_settings.CHECK_REVOKE_TOKEN and refresh.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            with contextlib.suppress(AttributeError):  # no blacklist app: nothing to record
                refresh.blacklist()
            raise AuthenticationFailed(
                _("The user's password has been changed."), code="password_changed"
            )
        return super().validate(attrs)
