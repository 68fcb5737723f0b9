"""Sign-in, sign-out and sign-up pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password=PASSWORD)


def signed_in_user_id(client) -> str | None:
    return client.session.get(SESSION_KEY)


# --- login --------------------------------------------------------------------------


def test_login_page_renders_form_with_signup_link(client):
    """The login page shows a username/password form and a link to sign up."""
    response = client.get(reverse("login"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="username"' in html
    assert 'name="password"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert f'href="{reverse("signup")}"' in html


def test_login_with_valid_credentials_signs_in_and_goes_to_chat(client, alice):
    """Correct credentials sign the user in and land on the chat home."""
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("chat:home")
    assert signed_in_user_id(client) == str(alice.pk)


def test_login_follows_next_parameter(client, alice):
    """After signing in the user returns to the page that asked for it."""
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": "/c/abc/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/c/abc/"


def test_login_with_wrong_password_shows_error(client, alice):
    """A wrong password re-renders the form with an error and signs nobody in."""
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert b'data-testid="form-errors"' in response.content
    assert signed_in_user_id(client) is None


def test_login_page_sends_signed_in_users_to_chat(client, alice):
    """A user who is already signed in is redirected away from the login page."""
    client.force_login(alice)

    response = client.get(reverse("login"))

    assert response.status_code == 302
    assert response["Location"] == reverse("chat:home")


# --- logout -------------------------------------------------------------------------


def test_logout_signs_out_and_goes_to_login(client, alice):
    """POSTing to logout ends the session and redirects to the login page."""
    client.force_login(alice)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert signed_in_user_id(client) is None
    assert client.get(reverse("chat:home")).status_code == 302


def test_logout_rejects_get(client, alice):
    """Logout is POST only: a GET (e.g. a link or prefetch) does not sign the user out."""
    client.force_login(alice)

    response = client.get(reverse("logout"))

    assert response.status_code == 405
    assert signed_in_user_id(client) == str(alice.pk)


# --- signup -------------------------------------------------------------------------


def test_signup_page_renders_form_with_login_link(client):
    """The signup page shows the account form and a link back to sign in."""
    response = client.get(reverse("signup"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="username"' in html
    assert 'name="password1"' in html
    assert 'name="password2"' in html
    assert f'href="{reverse("login")}"' in html


def test_signup_creates_user_signs_in_and_goes_to_chat(client, django_user_model):
    """A valid signup creates the account, signs it in and lands on the chat home."""
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("chat:home")
    user = django_user_model.objects.get(username="newbie")
    assert user.check_password(PASSWORD)
    assert signed_in_user_id(client) == str(user.pk)
    assert client.get(reverse("chat:home")).status_code == 200


def test_signup_with_mismatched_passwords_creates_nobody(client, django_user_model):
    """Mismatched passwords re-render the form with an error and create no account."""
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD + "x"},
    )

    assert response.status_code == 200
    assert b"field__error" in response.content
    assert not django_user_model.objects.filter(username="newbie").exists()
    assert signed_in_user_id(client) is None


def test_signup_with_taken_username_creates_nobody(client, alice, django_user_model):
    """A username that is already taken is refused."""
    response = client.post(
        reverse("signup"),
        {"username": "alice", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 200
    assert django_user_model.objects.filter(username="alice").count() == 1
    assert signed_in_user_id(client) is None


def test_signup_page_sends_signed_in_users_to_chat(client, alice):
    """A user who is already signed in is redirected away from the signup page."""
    client.force_login(alice)

    response = client.get(reverse("signup"))

    assert response.status_code == 302
    assert response["Location"] == reverse("chat:home")
