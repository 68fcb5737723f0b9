"""`python -m chatsite.server` as `make run` starts it: the banner comes once the port is
bound, and a port that cannot be bound is a clear failure, not a misleading banner."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.conftest import ROOT, _database_url, free_port

BANNER = "chatsite test banner: http://{host}:{port}/"


@pytest.fixture
def server_env(django_db_setup):
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings.test",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "CHAT_SWEEP_ORPHANS": "0",
        "PYTHONUNBUFFERED": "1",
        "CHATSITE_BANNER": BANNER,
    }


def serve(port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatsite.server",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "chatsite.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_banner_is_printed_once_the_port_accepts_connections(server_env):
    port = free_port()
    process = serve(port, server_env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    seen = []
    try:
        while not seen or not seen[-1].startswith("chatsite test banner"):
            seen.append(lines.get(timeout=30))  # queue.Empty: no banner within 30 s
        assert seen[-1].strip() == BANNER.format(host="127.0.0.1", port=port), seen
        # No retry loop: the banner promises the port is bound already.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10) as r:
            assert r.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    while not lines.empty():
        seen.append(lines.get())
    assert not any("HTTP/2 support not enabled" in line for line in seen), seen


def test_a_busy_port_fails_clearly_without_a_banner(server_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(port, server_env)
        try:
            output, _ = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 1, output
    assert "chatsite test banner" not in output
    assert "chatsite: cannot listen" in output
    assert "make run PORT=" in output
