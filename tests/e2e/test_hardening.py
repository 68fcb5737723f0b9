"""Requests a client can get wrong, on both servers: every refusal is the API's JSON error,
nothing is stored, no traceback is logged, and stream tokens never reach a log.

Each test runs against daphne (`chatsite.server`) and uvicorn (`chatsite.uvicorn_server`).
"""

from __future__ import annotations

import time

import httpx
import pytest

from chat.models import Message

from .client import wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE


class LogTail:
    """What a server writes to its log from now on."""

    def __init__(self, server) -> None:
        self.server = server
        self.start = server.log.stat().st_size

    def text(self) -> str:
        with self.server.log.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 10.0) -> str:
        """The new text once `needle` is in it `count` times (servers log as responses end)."""
        deadline = time.monotonic() + timeout
        while (text := self.text()).count(needle) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert text.count(needle) >= count, f"{needle!r} not logged {count} times:\n{text}"
        return text


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def messages_path(conversation: dict) -> str:
    return f"/api/v1/conversations/{conversation['id']}/messages/"


def _chunks(total: int, size: int = 64 * 1024):
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


# --- bodies over the upload limit ---------------------------------------------------


BODIES = {
    "10MB-json": (lambda: b'{"content": "' + b"x" * 10_000_000 + b'"}', "application/json"),
    "10MB-garbage": (lambda: b"\xff\x00garbage" * 1_000_000, "application/json"),
    "form": (lambda: b"content=" + b"x" * LIMIT, "application/x-www-form-urlencoded"),
    "one-byte-over": (lambda: b"x" * (LIMIT + 1), "text/plain"),
}


@pytest.mark.parametrize("kind", BODIES)
def test_a_body_over_the_upload_limit_is_413_json(site, site_api, kind):
    """A body larger than Django's upload limit, whatever it holds, gets 413
    `request_too_large` (JSON), nothing is stored, and nothing but the request is logged."""
    make_body, content_type = BODIES[kind]
    conversation = site_api.create_conversation()
    log = LogTail(site)
    response = site_api.http.post(
        messages_path(conversation), content=make_body(), headers={"content-type": content_type}
    )
    assert_json_error(response, 413, "request_too_large")
    assert not Message.objects.filter(conversation_id=conversation["id"]).exists()
    text = log.wait_for(messages_path(conversation))
    assert "Traceback" not in text
    assert "RequestDataTooBig" not in text


def test_a_chunked_body_over_the_limit_is_413_json(site, site_api):
    """A body sent without a Content-Length (chunked) is stopped once it passes the limit."""
    conversation = site_api.create_conversation()
    response = site_api.http.post(
        messages_path(conversation),
        content=_chunks(LIMIT + 100_000),
        headers={"content-type": "application/json"},
    )
    assert_json_error(response, 413, "request_too_large")
    assert not Message.objects.filter(conversation_id=conversation["id"]).exists()


def test_a_body_under_the_limit_still_meets_the_message_limit(site, site_api):
    """A 2.4 MB message is under the body limit: the message limit answers, 413
    `content_too_long`, as before."""
    conversation = site_api.create_conversation()
    response = site_api.http.post(messages_path(conversation), json={"content": "x" * 2_400_000})
    assert_json_error(response, 413, "content_too_long")


# --- unknown paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/conversations/not-a-uuid/"),
        ("GET", "/api/v1/conversations/1234/messages/"),
        ("POST", "/api/v1/messages/abc/cancel/"),
        ("GET", "/api/v1/no-such-thing/"),
        ("GET", "/api/v2/"),
        ("GET", "/stream/conversations/not-a-uuid/"),
        ("GET", "/stream/no-such-thing/"),
    ],
)
def test_unknown_paths_under_the_api_and_the_stream_are_json_404(site, site_api, method, path):
    """A non-UUID id or an unknown path under /api/ or /stream/ gets the API's JSON 404,
    with the code of an id that names nothing."""
    assert_json_error(site_api.http.request(method, path), 404, "not_found")


def test_unknown_pages_keep_the_html_404(site):
    """Outside the API and the stream, a 404 is still Django's HTML page."""
    response = httpx.get(f"{site.url}/no-such-page/", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


# --- stream tokens and the access log ------------------------------------------------


def test_percent_encoded_stream_tokens_never_reach_the_log(site, site_api):
    """However the query spells it — `%74oken=` (Django decodes it to `token`, so it opens
    the stream), a token inside another parameter's decoded value, double encoding — and
    even in the path, a token is redacted in everything the server logs."""
    conversation, other = site_api.create_conversation(), site_api.create_conversation()
    token = site_api.stream_url(conversation["id"]).split("token=")[1]
    # The threat is real: this spelling of the parameter is a working token.
    own = f"{site.url}/stream/conversations/{conversation['id']}/?%74oken={token}"
    with httpx.stream("GET", own, timeout=5) as response:
        assert response.status_code == 200

    log = LogTail(site)
    stream = f"/stream/conversations/{other['id']}/"
    queries = [f"%74oken={token}", f"x=1%26token={token}", f"a=1&%2574oken={token}&b=2"]
    for query in queries:
        response = httpx.get(f"{site.url}{stream}?{query}", timeout=5)
        assert response.status_code == 401
    assert site_api.http.get(f"/api/v1/{token}/").status_code == 404
    text = log.wait_for(stream, count=len(queries))
    log.wait_for("/api/v1/")
    text = log.text()
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature
    assert f"{stream}?%74oken=[redacted]" in text
    assert f"{stream}?x=[redacted]" in text
    assert f"{stream}?a=1&%2574oken=[redacted]&b=2" in text
    assert "/api/v1/[redacted]/" in text


# --- invisible content, multipart without a boundary -------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("\u200b\u200b", id="zero-width-spaces"),
        pytest.param("\u200d\ufeff\u2060", id="joiner-bom-word-joiner"),
        pytest.param("\u3164", id="hangul-filler"),
        pytest.param("\u2800 \u2800", id="braille-blank"),
        pytest.param(" \u00a0\u3000\t\n", id="unicode-spaces"),
    ],
)
def test_content_of_only_invisible_characters_is_blank(site, site_api, content):
    """A message nobody could see is refused like an empty one: 400 `blank`, nothing stored."""
    conversation = site_api.create_conversation()
    response = site_api.http.post(messages_path(conversation), json={"content": content})
    body = assert_json_error(response, 400, "invalid")
    assert body["error_codes"]["content"] == ["blank"]
    assert not Message.objects.filter(conversation_id=conversation["id"]).exists()


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"],
)
def test_multipart_without_a_boundary_is_a_logged_json_400(site, site_api, content_type):
    """A multipart body without a (valid) boundary reaches the API, which refuses it with its
    JSON error; the server logs the request like any other."""
    conversation = site_api.create_conversation()
    log = LogTail(site)
    response = site_api.http.post(
        messages_path(conversation), content=b"content=hi", headers={"content-type": content_type}
    )
    assert_json_error(response, 400, "parse_error")
    log.wait_for(f"POST {messages_path(conversation)}")
    assert not Message.objects.filter(conversation_id=conversation["id"]).exists()


def test_multipart_with_a_boundary_still_sends(site, site_api):
    """Form bodies go to Django unparsed by the server: a well-formed multipart send works."""
    conversation = site_api.create_conversation()
    response = site_api.http.post(messages_path(conversation), files={"content": (None, "hello")})
    assert response.status_code == 201, response.text
    assert response.json()["user_message"]["content"] == "hello"
    wait_for_final(response.json()["assistant_message"]["id"])
