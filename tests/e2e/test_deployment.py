"""Servers started with the local and the production settings, over real HTTP.

Local: the secret key is this install's own, so a token signed with the key the repository
used to hold is refused. Production: plain HTTP is redirected to HTTPS, HTTPS (as the TLS
proxy reports it) gets HSTS, and a deployment without a TLS proxy can turn the redirect off.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

REPOSITORY_KEY = "django-insecure-local-development-only"  # in local.py until this change
TEN_YEARS = 10 * 365 * 24 * 3600


def forge(key: str, **claims) -> str:
    now = int(time.time())
    payload = {"iat": now, "exp": now + TEN_YEARS, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, key, algorithm="HS256")


def test_a_local_install_refuses_tokens_signed_with_the_repositorys_key(
    start_daphne, tmp_path, user, conversation
):
    """With local settings and no DJANGO_SECRET_KEY, a ten-year access token or stream token
    forged with the key that was in the repository is refused (401); tokens signed with the
    install's own key, which only its key file holds, work."""
    key_file = tmp_path / "secret-key"
    site = start_daphne(
        DJANGO_SETTINGS_MODULE="chatsite.settings.local",
        DJANGO_SECRET_KEY="",
        DJANGO_SECRET_KEY_FILE=str(key_file),
        ANTHROPIC_API_KEY="",
    )
    install_key = key_file.read_text().strip()
    assert len(install_key) >= 50
    stream_url = f"{site.url}/stream/conversations/{conversation.pk}/"

    def api_status(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{site.url}/api/v1/conversations/", headers=headers).status_code

    def stream_status(token: str) -> int:
        with httpx.stream("GET", stream_url, params={"token": token}, timeout=10) as response:
            return response.status_code

    # Every token carries the fingerprint of its user's password (CHECK_REVOKE_TOKEN): the
    # forgeries carry the right one, so only the signing key decides.
    claims = {
        "user_id": user.pk,
        api_settings.REVOKE_TOKEN_CLAIM: get_md5_hash_password(user.password),
    }
    for key, api, stream in [(REPOSITORY_KEY, 401, 401), (install_key, 200, 200)]:
        assert api_status(forge(key, token_type="access", **claims)) == api
        sse = forge(key, token_type="sse", conversation_id=str(conversation.pk), **claims)
        assert stream_status(sse) == stream


def production_site(start_daphne, **env: str):
    return start_daphne(
        DJANGO_SETTINGS_MODULE="chatsite.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        ANTHROPIC_API_KEY="",
        CHAT_SINGLE_PROCESS="1",  # no Redis: one process on its own
        **env,
    )


def test_production_redirects_plain_http_and_sends_hsts_over_https(start_daphne):
    """Production settings by default: a plain-HTTP request is redirected to HTTPS; a
    request the TLS proxy marks as HTTPS (X-Forwarded-Proto) is served, with HSTS."""
    site = production_site(start_daphne)
    path = "/api/v1/conversations/"
    plain = httpx.get(f"{site.url}{path}")
    assert plain.status_code == 301
    assert plain.headers["location"] == f"https://127.0.0.1:{site.url.rsplit(':', 1)[1]}{path}"

    proxied = httpx.get(f"{site.url}{path}", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 401  # served: the API asks for credentials
    assert proxied.headers["strict-transport-security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )


def test_production_without_a_tls_proxy_can_serve_plain_http(start_daphne):
    """DJANGO_SECURE_SSL_REDIRECT=0 (the benchmark's plain-HTTP setup): no redirect, and no
    HSTS over plain HTTP."""
    site = production_site(start_daphne, DJANGO_SECURE_SSL_REDIRECT="0")
    response = httpx.get(f"{site.url}/api/v1/conversations/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "strict-transport-security" not in response.headers


def test_production_serves_hashed_static_files_compressed_and_cached_for_good(
    start_daphne, tmp_path
):
    """After collectstatic into DJANGO_STATIC_ROOT, production serves each static file under
    its hashed name, gzipped for a client that accepts it, with a ten-year immutable
    Cache-Control (a new deploy gives changed files new names); the unhashed name is cached
    briefly."""
    static_root = tmp_path / "static"
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_STATIC_ROOT": str(static_root),
            # Required by production settings; collectstatic never connects to it.
            "DATABASE_URL": "postgres://chatsite@127.0.0.1:5432/chatsite",
            "CHAT_SINGLE_PROCESS": "1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collect.returncode == 0, collect.stderr
    hashed = json.loads((static_root / "staticfiles.json").read_text())["paths"]["chat/chat.css"]
    site = production_site(start_daphne, DJANGO_STATIC_ROOT=str(static_root))
    https = {"X-Forwarded-Proto": "https", "Accept-Encoding": "gzip"}

    response = httpx.get(f"{site.url}/static/{hashed}", headers=https)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == "max-age=315360000, public, immutable"
    assert response.text == (static_root / hashed).read_text()

    plain_name = httpx.get(f"{site.url}/static/chat/chat.css", headers=https)
    assert plain_name.status_code == 200
    assert "immutable" not in plain_name.headers["cache-control"]
