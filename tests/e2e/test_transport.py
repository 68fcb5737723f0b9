"""Connections the servers must let go of: slow readers, silent clients, slow headers.

Each test runs against both servers we ship (`chatsite.server` on daphne and
`chatsite.uvicorn_server`), started with a 2 s heartbeat — a client that leaves what
is written to its stream untaken for a heartbeat is dropped — a 2 s header timeout
and a 10 s keep-alive. The clients are raw sockets, so each can read as slowly as
it likes, stop reading, or stop half-way through its headers; one vanishes without a
word, its link taken down in a network namespace of its own (where the machine
allows it: root, `unshare`, veth). Every wait is for an event that must happen, with
a generous deadline.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.fake_anthropic import generated_deltas
from chat.models import Message
from tests.conftest import ROOT, Server, claude_env

from .client import ChatApi, fake, wait_for_final
from .test_failures import open_stream_status, terminate_quietly

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT_SECONDS = 2
HEADER_TIMEOUT_SECONDS = 2
KEEPALIVE_SECONDS = 10
# Generous: the events below must happen well within these on a loaded 2-core machine.
DROP_DEADLINE = 30.0
CLOSE_DEADLINE = 20.0


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def site(request, start_daphne, fake_anthropic) -> Iterator[Server]:
    server = start_daphne(
        server=request.param,
        **claude_env(
            fake_anthropic,
            CHAT_SSE_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
            CHAT_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_SECONDS),
            CHAT_HTTP_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS),
            CHAT_MAX_STREAMS_PER_USER="1",
            CHAT_MAX_TOKENS="20000",
        ),
    )
    yield server
    terminate_quietly(server)


@pytest.fixture
def api(site, user, password) -> ChatApi:
    return ChatApi(site.url, user.username, password)


# --- raw clients ---------------------------------------------------------------------


def connect(server: Server, *, receive_buffer: int | None = None) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:
        # Before connecting: the window the client offers is fixed by it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    return sock


def open_stream(
    api: ChatApi,
    server: Server,
    conversation_id: str,
    *,
    last_event_id: str | None = None,
    receive_buffer: int | None = None,
) -> socket.socket:
    """A raw client's event stream, subscribed on the server (its `retry:` block read)."""
    sock = connect(server, receive_buffer=receive_buffer)
    url = api.stream_url(conversation_id)
    if last_event_id is not None:
        url += f"&last_event_id={last_event_id}"
    request = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    sock.sendall(f"{request}Accept: text/event-stream\r\n\r\n".encode())
    sock.settimeout(10)
    head = b""
    while b"retry:" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"the stream closed before it started: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_until_closed(sock: socket.socket, *, chunk: int, every: float, deadline: float) -> bytes:
    """Read at most `chunk` bytes every `every` seconds until the server closes the
    connection."""
    received = b""
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            data = sock.recv(chunk)
        except TimeoutError:
            continue
        except ConnectionResetError:  # aborted: what was still buffered is gone with it
            return received
        if not data:
            return received
        received += data
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    raise AssertionError(f"the server did not close the stream ({len(received)} bytes read)")


def closed_by_server(sock: socket.socket, *, trickle: bytes = b"", deadline: float) -> bool:
    """Whether the server closes `sock` by `deadline`, while the client sends `trickle`
    (a byte at a time, twice a second) and reads whatever comes."""
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle[:1])
                trickle = trickle[1:] or trickle
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def drop_lines(server: Server, conversation_id: str) -> list[str]:
    return [
        line
        for line in server.log.read_text().splitlines()
        if "event stream dropped" in line and f"/stream/conversations/{conversation_id}/" in line
    ]


# --- event streams ---------------------------------------------------------------------


def test_a_slow_reader_is_dropped_and_its_answer_is_saved_whole(site, api):
    """A client that reads 1 KB/s while a long answer streams much faster fills what
    the server may hold for it; the server then drops it — the connection closes
    before the answer's end reached it — says so in one log line, and the answer,
    whose run does not depend on its viewers, is complete in the database."""
    conversation = api.create_conversation()
    sock = open_stream(api, site, conversation["id"], receive_buffer=16 * 1024)
    tokens = 3000  # about 450 KB of events in 3 s
    sent = api.send(conversation["id"], f"Long {fake(tokens=tokens, tps=1000)}")
    assistant_id = sent["assistant_message"]["id"]
    try:
        received = read_until_closed(
            sock, chunk=1024, every=1.0, deadline=time.monotonic() + DROP_DEADLINE
        )
    finally:
        sock.close()
    assert b"event: message_end" not in received

    answer = wait_for_final(assistant_id, timeout=60)
    assert answer.status == Message.Status.COMPLETE
    assert answer.content == "".join(generated_deltas(tokens))
    assert len(drop_lines(site, conversation["id"])) == 1


def test_a_reader_that_leaves_the_write_buffer_full_for_a_heartbeat_is_dropped(site, api):
    """A client resuming after twelve long answers reads 10 KB/s in small bites: its
    window keeps moving, but the server's write buffer (64 KiB, behind the kernel's)
    stays full for longer than a heartbeat, so the server drops it mid catch-up and
    logs that its writes waited."""
    conversation = api.create_conversation()
    text = "".join(f"word{i:05d} " for i in range(2000))  # 20,000 characters
    encoded = base64.urlsafe_b64encode(text.encode()).decode()
    answers = []
    for _ in range(12):
        sent = api.send(conversation["id"], f"[[fake:text={encoded},chunk=2000,tps=0]]")
        answers.append(wait_for_final(sent["assistant_message"]["id"], timeout=30))
    assert all(answer.content == text for answer in answers)

    # The first answer's start: the stream sends all twelve again (about 245 KB).
    sock = open_stream(
        api, site, conversation["id"], receive_buffer=1, last_event_id=f"{answers[0].pk}:0"
    )
    try:
        received = read_until_closed(
            sock, chunk=1024, every=0.1, deadline=time.monotonic() + DROP_DEADLINE
        )
    finally:
        sock.close()
    assert received.count(b"event: message_end") < len(answers)
    [line] = drop_lines(site, conversation["id"])
    assert "its writes waited 2 s" in line


def test_a_client_that_stops_reading_is_freed_within_two_heartbeats(site, api):
    """A client that stops reading (its receive buffer full, its window closed) while
    far less is written to it than the server's buffers hold: the kernel gets no
    room for a heartbeat and the server lets the connection go — the user's one
    stream slot (CHAT_MAX_STREAMS_PER_USER=1) is free for a new stream — and logs
    that the client took nothing."""
    conversation = api.create_conversation()
    sock = open_stream(api, site, conversation["id"], receive_buffer=4096)
    try:
        assert open_stream_status(api, conversation["id"]).status_code == 429
        # 400 events over 2 s, about 60 KB: more than the client's window, less than
        # the kernel's send buffer.
        sent = api.send(conversation["id"], f"Some {fake(tokens=400, tps=200)}")
        deadline = time.monotonic() + DROP_DEADLINE
        while (status := open_stream_status(api, conversation["id"]).status_code) != 200:
            assert status == 429, status
            assert time.monotonic() < deadline, "the silent client still holds its stream"
            time.sleep(0.2)
    finally:
        sock.close()
    answer = wait_for_final(sent["assistant_message"]["id"], timeout=30)
    assert answer.status == Message.Status.COMPLETE
    [line] = drop_lines(site, conversation["id"])
    assert "the client took nothing for 2 s" in line


def _network_namespaces() -> bool:
    """Whether this process may make network namespaces joined by a veth pair."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "ip"))):
        return False
    veth = ["ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]
    return subprocess.run(["unshare", "--net", *veth], capture_output=True).returncode == 0


def _database_url_across_namespaces() -> str | None:
    """The test database by a path, which a network namespace does not hide."""
    from django.db import connection

    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    port = settings.get("PORT") or 5432
    for directory in ("/var/run/postgresql", "/run/postgresql", "/tmp"):  # noqa: S108
        if Path(directory, f".s.PGSQL.{port}").exists():
            user = settings.get("USER") or "postgres"
            return f"postgres://{user}@:{port}/{settings['NAME']}?host={directory}"
    return None


@pytest.mark.skipif(
    not _network_namespaces(), reason="needs root and network namespaces (unshare, veth)"
)
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_client_that_vanishes_is_freed_within_two_heartbeats(server, user, password):
    """A client whose link goes down mid-stream — no FIN, no RST, no ACK, as when a
    cable is pulled — while its process lives on: the server gets no acknowledgement
    for the heartbeats it sends, lets the connection go, and the user's one stream
    slot is free again (tests/e2e/half_open.py sets the scene in namespaces of its
    own); the log says the client took nothing."""
    database_url = _database_url_across_namespaces()
    if database_url is None:
        pytest.skip("the database has no Unix socket to reach it from another namespace")
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings.test",
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "10.99.0.1",
        "ANTHROPIC_API_KEY": "",
        "CHAT_SWEEP_ORPHANS": "0",
        "CHAT_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "CHAT_MAX_STREAMS_PER_USER": "1",
        "PYTHONUNBUFFERED": "1",
    }
    scene = [sys.executable, "-m", "tests.e2e.half_open", server, "8000", user.username, password]
    done = subprocess.run(
        ["unshare", "--net", *scene],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["held"] == 429  # the vanished client's stream holds the slot at first
    assert result["freed_after"] is not None, result["log"]
    [line] = [line for line in result["log"].splitlines() if "event stream dropped" in line]
    assert f"the client took nothing for {HEARTBEAT_SECONDS} s" in line


# --- header and idle timeouts ----------------------------------------------------------


def test_a_client_that_trickles_its_headers_is_disconnected(site):
    """Slowloris: a request line and one header, then a header byte twice a second.
    The server disconnects it once CHAT_HTTP_HEADER_TIMEOUT_SECONDS have passed,
    however steadily the bytes keep coming."""
    with contextlib.closing(connect(site)) as sock:
        sock.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + CLOSE_DEADLINE
        assert closed_by_server(sock, trickle=b"X-Slow: " + b"o" * 200, deadline=deadline)


def test_a_connection_that_sends_nothing_is_disconnected(site):
    """A client that connects and sends nothing is disconnected once
    CHAT_HTTP_HEADER_TIMEOUT_SECONDS have passed."""
    with contextlib.closing(connect(site)) as sock:
        deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + CLOSE_DEADLINE
        assert closed_by_server(sock, deadline=deadline)


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(site):
    """After a response, a keep-alive connection is kept for CHAT_HTTP_KEEPALIVE_SECONDS
    (10 s here; the header timeout does not apply while no request has begun), then
    closed."""
    with contextlib.closing(connect(site)) as sock:
        sock.sendall(b"GET /api/v1/conversations/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        head, body = response.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 401"), head
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(4096)
        answered = time.monotonic()

        time.sleep(KEEPALIVE_SECONDS / 2 + 1)
        assert not closed_by_server(sock, deadline=time.monotonic() + 0.5)
        assert closed_by_server(sock, deadline=answered + KEEPALIVE_SECONDS + CLOSE_DEADLINE)
