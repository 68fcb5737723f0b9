"""Errors Django raises or answers itself are the API's JSON errors under /api/ and /stream/
(chat/api/errors.py); pages keep Django's HTML."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from chat.api import errors
from chat.models import Message

pytestmark = pytest.mark.django_db


def messages_url(conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages/"


@pytest.fixture
def client_without_raising(user) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    return client


def test_too_many_form_fields_is_a_json_400_logged_in_one_line(
    client_without_raising, conversation, caplog
):
    """A form body with more fields than Django parses is a JSON 400 `bad_request`, logged as
    one warning on Django's security logger, without a traceback."""
    body = "&".join(["content=hi"] * 1001)
    with caplog.at_level(logging.WARNING, logger="django.security"):
        response = client_without_raising.post(
            messages_url(conversation), body, content_type="application/x-www-form-urlencoded"
        )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    [record] = [r for r in caplog.records if r.name.startswith("django.security")]
    assert record.name == "django.security.TooManyFieldsSent"
    assert record.exc_info is None
    assert not Message.objects.exists()


def test_a_body_over_the_upload_limit_reaching_a_view_is_a_json_413(
    client_without_raising, conversation, settings
):
    """Where the ASGI handler did not refuse it first (Django's test client bypasses it),
    a body over the upload limit is still the API's JSON 413."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client_without_raising.post(
        messages_url(conversation), {"content": "x" * 2000}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        ("bad_request", 400, "bad_request"),
        ("permission_denied", 403, "permission_denied"),
        ("page_not_found", 404, "not_found"),
        ("server_error", 500, "server_error"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/anything/", "/stream/anything/", "/chat/"])
def test_django_error_pages_are_json_under_the_api_and_the_stream(handler, status, code, path):
    """The root URLconf's handler400 ... handler500 answer with the API's JSON error under
    /api/ and /stream/, and with Django's HTML pages elsewhere."""
    from chatsite import urls

    view = getattr(urls, f"handler{status}")
    request = RequestFactory().get(path)
    response = view(request) if status == 500 else view(request, Exception())
    assert response.status_code == status
    if path == "/chat/":
        assert response["Content-Type"].startswith("text/html")
    else:
        assert response["Content-Type"] == "application/json"
        assert json.loads(response.content)["code"] == code
    assert view is getattr(errors, handler)
