"""`/healthz`, `/readyz`, `/metrics` (chatsite/probes.py): before Django, on the event loop."""

from __future__ import annotations

import asyncio
import json

import pytest

from chat.runs import manager
from chatsite.handlers import ChatsiteASGIHandler
from tests.asgi import asgi_request
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def request(
    path: str,
    *,
    method: str = "GET",
    client: tuple[str, int] | None = ("127.0.0.1", 40000),
    headers: list[tuple[bytes, bytes]] = (),
    host: bytes = b"10.1.2.3:8000",  # how a load balancer probes: not one of ALLOWED_HOSTS
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the site's ASGI application: (status, headers, body)."""
    sent = asgi_request(
        ChatsiteASGIHandler(),
        path,
        method=method,
        headers=headers,
        host=host,
        client=client,
        server=("10.1.2.3", 8000),
    )
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.lower(): v for k, v in start["headers"]}, body


def test_healthz_answers_whatever_the_host_without_middleware():
    """200 while the event loop runs: any Host header, plain HTTP, no middleware headers."""
    status, headers, body = request("/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert b"x-frame-options" not in headers  # Django's middleware never ran
    assert headers[b"cache-control"] == b"no-store"


def test_probes_take_get_and_head_only():
    status, headers, body = request("/readyz", method="POST")
    assert status == 405
    assert json.loads(body)["code"] == "method_not_allowed"
    assert headers[b"allow"] == b"GET, HEAD"
    status, _, body = request("/healthz", method="HEAD")
    assert (status, body) == (200, b"")


def test_readyz_is_200_with_each_check_ok(settings):
    settings.REDIS_URL = None  # a site without Redis has nothing to check there
    status, _, body = request("/readyz")
    assert status == 200
    assert json.loads(body) == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "accepting": "ok"},
    }


def test_readyz_is_503_with_retry_after_when_redis_is_unreachable(settings):
    """The failed check is named, in the API's error body."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    status, headers, body = request("/readyz")
    assert status == 503
    assert headers[b"retry-after"] == b"5"
    data = json.loads(body)
    assert data["code"] == "not_ready"
    assert "redis" in data["message"]
    assert data["checks"]["redis"].startswith("unavailable")
    assert data["checks"]["database"] == "ok"


def test_readyz_is_503_while_the_process_drains(settings, monkeypatch):
    settings.REDIS_URL = None
    monkeypatch.setattr(manager, "draining", True)
    status, _, body = request("/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["accepting"] == "draining"


def test_readyz_fails_a_database_check_that_takes_too_long(settings, monkeypatch):
    """A database that does not answer in CHAT_HEALTH_TIMEOUT_SECONDS fails the check."""
    from chatsite import probes

    async def hangs():
        await asyncio.sleep(10)

    settings.REDIS_URL = None
    settings.CHAT_HEALTH_TIMEOUT_SECONDS = 0.2
    monkeypatch.setattr(probes, "_select_one", hangs)
    status, _, body = request("/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["database"] == "timeout"


# --- /metrics ---------------------------------------------------------------------------


def test_metrics_are_served_to_this_machine():
    status, headers, body = request("/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    text = body.decode()
    for name in (
        "chatsite_open_streams",
        "chatsite_active_runs",
        "chatsite_runs_started_total",
        "chatsite_tokens_relayed_total",
        "chatsite_time_to_first_token_seconds_bucket",
        "chatsite_relay_latency_seconds_bucket",
    ):
        assert name in text


@pytest.mark.parametrize(
    ("client", "headers"),
    [
        pytest.param(("203.0.113.9", 5000), [], id="another-address"),
        pytest.param(("127.0.0.1", 5000), [(b"x-forwarded-for", b"203.0.113.9")], id="proxied"),
        pytest.param(("127.0.0.1", 5000), [(b"forwarded", b"for=203.0.113.9")], id="forwarded"),
        pytest.param(None, [], id="unix-socket"),
    ],
)
def test_metrics_are_the_sites_ordinary_404_for_anyone_else(client, headers):
    """Not 403: the page does not exist for them (Django's own 404 answers)."""
    status, response_headers, body = request(
        "/metrics", client=client, headers=headers, host=b"127.0.0.1"
    )
    assert status == 404
    assert b"chatsite_" not in body
    assert b"x-frame-options" in response_headers  # Django answered, like any unknown page


def test_the_allow_list_takes_networks(settings):
    settings.CHAT_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    assert request("/metrics", client=("10.20.30.40", 1))[0] == 200
    assert request("/metrics", client=("::ffff:10.20.30.40", 1))[0] == 200
    assert request("/metrics", client=("2001:db8::7", 1))[0] == 200
    assert request("/metrics", client=("127.0.0.1", 1), host=b"127.0.0.1")[0] == 404
