"""Debian's nginx, configured with the shipped site file (deploy/nginx/chatsite.conf), in front
of two processes sharing PostgreSQL and a Redis: events pass through as they are written, a
stream moves to the other process when its own stops, and /readyz says when Redis is away.

The site file is used as shipped, but for what a machine changes in it: the processes'
addresses, the listening ports and the certificate paths (a certificate made for the test).
nginx runs as the test's own child, in a prefix of its own; the system's nginx is not used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chat.models import Message
from tests.conftest import ROOT, RedisServer, Server, cluster_env, free_port, stop

from .client import ChatApi, OpenStream, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

SITE_FILE = ROOT / "deploy" / "nginx" / "chatsite.conf"
CERTIFICATES = "/etc/letsencrypt/live/chat.example.com/"


def nginx_binary() -> str:
    """Debian's nginx; missing, the tests fail (CI installs it with .ci/ensure-services)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not found:
        pytest.fail(
            "nginx is not installed: run `bash .ci/ensure-services` (apt-get install nginx)"
        )
    return found


def site_config(*, backends: list[str], http_port: int, https_port: int, tls: Path) -> str:
    """The shipped site file with this machine's addresses, ports and certificate."""
    text = SITE_FILE.read_text()
    for old, new in [
        ("server 127.0.0.1:8001 ", f"server {backends[0]} "),
        ("server 127.0.0.1:8002 ", f"server {backends[1]} "),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        (f"{CERTIFICATES}fullchain.pem", str(tls / "cert.pem")),
        (f"{CERTIFICATES}privkey.pem", str(tls / "key.pem")),
    ]:
        assert text.count(old) == 1, f"{SITE_FILE} no longer has {old!r} once: update this test"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf sets around a site (gzip on, here for event streams
    too: the site file must turn it off for them), with every path in `prefix`."""
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    temp = " ".join(
        f"{kind}_temp_path {prefix}/temp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    {temp}
    gzip on;
    gzip_types text/event-stream application/json text/css application/javascript;
    include {prefix}/chatsite.conf;
}}
"""


def make_certificate(directory: Path) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1; the context that trusts it."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ssl.create_default_context(cafile=str(directory / "cert.pem"))


@dataclass
class Site:
    url: str  # https://, through nginx
    http_url: str  # plain HTTP, through nginx
    backends: list[Server]
    redis: RedisServer
    verify: ssl.SSLContext
    prefix: Path


@pytest.fixture
def site(start_daphne, fake_anthropic, private_redis) -> Iterator[Site]:
    nginx = nginx_binary()
    env = cluster_env(fake_anthropic, private_redis)
    backends = [start_daphne(**env), start_daphne(**env)]
    prefix = Path(tempfile.mkdtemp(prefix="chatsite-nginx-"))
    prefix.chmod(0o755)  # nginx's workers (nobody) reach their temp directories
    (prefix / "temp").mkdir(mode=0o777)
    verify = make_certificate(prefix)
    http_port, https_port = free_port(), free_port()
    (prefix / "chatsite.conf").write_text(
        site_config(
            backends=[b.url.removeprefix("http://") for b in backends],
            http_port=http_port,
            https_port=https_port,
            tls=prefix,
        )
    )
    (prefix / "nginx.conf").write_text(main_config(prefix))
    command = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{https_port}"
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            httpx.get(f"{url}/healthz", verify=verify, timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.05)
    yield Site(url, f"http://127.0.0.1:{http_port}", backends, private_redis, verify, prefix)
    process.send_signal(signal.SIGQUIT)  # graceful: let workers close their connections
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(prefix, ignore_errors=True)
    for backend in backends:  # not left running for the rest of the session
        stop(backend.process)


@pytest.fixture
def api(site, user, password) -> ChatApi:
    return ChatApi(site.url, user.username, password, verify=site.verify)


def open_streams(server: Server) -> float:
    """The process's open event streams, from its /metrics (scraped directly, as Prometheus
    does)."""
    metrics = httpx.get(f"{server.url}/metrics").text
    return float(re.search(r"^chatsite_open_streams (\S+)$", metrics, re.M).group(1))


def timed_events(stream: OpenStream, *, until_end_of: str) -> list[tuple[float, str, dict]]:
    """(arrival time, event, data) for each event until `until_end_of`'s message_end."""
    events = []
    deadline = time.monotonic() + stream.timeout
    for sse in stream.events:
        assert time.monotonic() < deadline, "stream read timed out"
        if not sse.data:
            continue
        events.append((time.monotonic(), sse.event, json.loads(sse.data)))
        if sse.event == "message_end" and events[-1][2]["message_id"] == until_end_of:
            return events
    raise AssertionError("the stream ended before the answer did")


def test_events_pass_through_nginx_as_they_are_written(site, api):
    """An answer written over about two seconds reaches the client through nginx over those
    two seconds, one small write at a time, uncompressed even for a client that accepts gzip
    (an nginx that buffered or compressed the stream would deliver it at the end)."""
    words = [f"w{i:02d} " for i in range(24)]
    conv = api.create_conversation()
    with api.stream(conv["id"]) as stream:
        response = stream.source.response
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "gzip" in response.request.headers["accept-encoding"]
        assert "content-encoding" not in response.headers
        sent = time.monotonic()
        reply = api.send(conv["id"], f"Hi {fake(text=''.join(words), tps=12)}")
        answer_id = reply["assistant_message"]["id"]
        events = timed_events(stream, until_end_of=answer_id)
    deltas = [(at, data["text"]) for at, event, data in events if event == "delta"]
    assert "".join(text for _, text in deltas) == "".join(words)
    first, last = deltas[0][0], deltas[-1][0]
    assert first - sent < 1.0, "the first words came late"
    assert last - first > 1.2, "the words came in one burst"
    # Spread out: no more than a third of the words arrived in any quarter second.
    assert max(sum(1 for at, _ in deltas if t <= at < t + 0.25) for t, _ in deltas) <= 8
    assert wait_for_final(answer_id).content == "".join(words)


def test_a_stream_resumes_through_nginx_on_the_other_process_when_its_own_stops(site, api):
    """The process serving a stream is killed mid-answer: the client reconnects through nginx
    with Last-Event-ID, nginx passes it to the other process, and the words read before and
    after make the stored answer exactly, with no gap and no repeat."""
    text = "".join(f"m{i:02d} " for i in range(40))
    conv = api.create_conversation()
    stream_url = api.stream_url(conv["id"])
    with api.stream(conv["id"], url=stream_url) as stream:
        deadline = time.monotonic() + 5
        while (counts := [open_streams(b) for b in site.backends]) != [1, 0] and counts != [0, 1]:
            assert time.monotonic() < deadline, f"open streams per process: {counts}"
            time.sleep(0.05)
        serving, other = site.backends if counts == [1, 0] else reversed(site.backends)
        # The answer runs on the other process: stopping this one tests the stream's move
        # (a run lost with its process is test_failures.py's).
        sent = api.http.post(
            f"{other.url}/api/v1/conversations/{conv['id']}/messages/",
            json={"content": f"Hi {fake(text=text, tps=20)}"},
        )
        assert sent.status_code == 201, sent.text
        answer_id = sent.json()["assistant_message"]["id"]
        before = stream.read(max_events=6)
        serving.process.kill()
        try:
            before.events += stream.read(until_end_of=answer_id).events
            pytest.fail("the stream went on after its process was killed")
        except httpx.TransportError:
            pass  # nginx ends the response it can no longer complete
    assert before.text(answer_id) and before.text(answer_id) != text
    with api.stream(conv["id"], url=stream_url, last_event_id=before.events[-1][2]) as stream:
        after = stream.read(until_end_of=answer_id)
        assert open_streams(other) == 1  # nginx passed the resumed stream to the other process
    assert after.of("message_start") == []
    assert before.text(answer_id) + after.text(answer_id) == text
    final = wait_for_final(answer_id)
    assert final.status == Message.Status.COMPLETE
    assert final.content == text


def test_readyz_turns_503_when_redis_is_unreachable(site):
    """/readyz is 200 on each process and through nginx, and 503 (not_ready, naming Redis)
    on each and through nginx once the site's Redis stops."""

    def statuses() -> list[int]:
        direct = [httpx.get(f"{b.url}/readyz", timeout=5).status_code for b in site.backends]
        proxied = httpx.get(f"{site.url}/readyz", verify=site.verify, timeout=5)
        return [*direct, proxied.status_code]

    assert statuses() == [200, 200, 200]
    site.redis.stop()
    deadline = time.monotonic() + 15
    while (seen := statuses()) != [503, 503, 503]:
        assert time.monotonic() < deadline, f"/readyz statuses: {seen}"
        time.sleep(0.2)
    body = httpx.get(f"{site.url}/readyz", verify=site.verify, timeout=5).json()
    assert body["code"] == "not_ready"
    assert "redis" in str(body).lower()


def test_the_site_file_redirects_plain_http_and_sets_the_request_id(site, api):
    """Plain HTTP is redirected to HTTPS; nginx gives every request its own X-Request-ID
    (a client's is replaced), which the app logs; a body too large is the app's JSON 413,
    not nginx's page; /metrics is not served through nginx; with no process up, the answer
    is the API's 503 error body."""
    plain = httpx.get(f"{site.http_url}/api/v1/", follow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["location"] == "https://127.0.0.1/api/v1/"

    response = api.http.get("/api/v1/conversations/", headers={"X-Request-ID": "chosen-by-client"})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    deadline = time.monotonic() + 5
    while not any(request_id in b.log.read_text() for b in site.backends):
        assert time.monotonic() < deadline, "the app did not log nginx's request id"
        time.sleep(0.05)
    assert not any("chosen-by-client" in b.log.read_text() for b in site.backends)

    # A body over the app's limit is refused by the app, with the API's error body.
    too_large = api.http.post("/api/v1/conversations/", content=b"x" * (3 * 1024 * 1024))
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "application/json"
    assert set(too_large.json()) >= {"code", "message"}

    assert api.http.get("/metrics").status_code == 404
    assert httpx.get(f"{site.backends[0].url}/metrics").status_code == 200  # directly: served

    # No process left: nginx answers the API's 503 `unavailable`, not its own 502 page.
    for backend in site.backends:
        stop(backend.process)
    down = api.http.get("/api/v1/conversations/")
    assert down.status_code == 503
    assert down.json()["code"] == "unavailable"
    assert down.headers["retry-after"] == "5"
