"""Shared fixtures: users, API clients, and real servers (daphne, fake Anthropic)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer in {timeout}s: {url}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_sse(stream: bytes) -> list:
    """Parse SSE bytes with httpx-sse, a spec-conformant third-party parser."""
    from httpx_sse import EventSource

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
    return list(EventSource(response).iter_sse())


@pytest.fixture(name="parse_sse")
def parse_sse_fixture():
    return parse_sse


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache; user ids repeat across tests on some databases."""
    from django.core.cache import cache

    cache.clear()


# --- users and clients -----------------------------------------------------------


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="mallory", password=PASSWORD)


@pytest.fixture
def api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


TWO_MODELS = [
    {"id": "model-a", "label": "Model A", "context_tokens": 100_000, "max_output_tokens": 2000},
    {"id": "model-b", "label": "Model B", "context_tokens": 50_000, "max_output_tokens": 1000},
]


@pytest.fixture
def two_models(settings) -> list[dict]:
    """An install that offers two models (`CHAT_MODELS`), the first the default."""
    settings.CHAT_MODELS = TWO_MODELS
    return TWO_MODELS


@pytest.fixture
def conversation(user):
    from chat.services import conversation_create

    return conversation_create(owner=user, title="Test chat")


# --- real servers ------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def fake_anthropic(tmp_path_factory) -> Iterator[Server]:
    """The fake Anthropic API in its own process, as tests and benchmarks use it."""
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "fake-anthropic.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chat.fake_anthropic", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/_fake/stats", process)
    yield Server(url, process, log)
    stop(process)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen | None
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) redis-server on this server's port."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


def _redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), None, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A Redis of the tests' own, on a free port (not the machine's shared one)."""
    yield from _redis_server(tmp_path_factory)


@pytest.fixture
def private_redis(tmp_path_factory) -> Iterator[RedisServer]:
    """A Redis for one test, which may stop and restart it."""
    yield from _redis_server(tmp_path_factory)


def _database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def start_daphne(django_db_setup, django_db_blocker, tmp_path_factory):
    """Start real daphne processes on the test database; all are stopped at the end."""
    from django.db import connection

    started: list[subprocess.Popen] = []

    def start(server: str = "daphne", **env: str) -> Server:
        """`server="uvicorn"` serves the site with `chatsite.uvicorn_server` instead."""
        port = free_port()
        log = tmp_path_factory.mktemp(server) / f"{server}-{port}.log"
        command = {
            "daphne": [
                "chatsite.server",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "--access-log",
                "-",
                "chatsite.asgi:application",
            ],
            "uvicorn": ["chatsite.uvicorn_server", "--host", "127.0.0.1", "--port", str(port)],
        }[server]
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings.test",
            "DATABASE_URL": _database_url(connection.settings_dict),
            "PYTHONUNBUFFERED": "1",
            # All test processes share one database, but each Redis (or in-memory
            # layer) is a site of its own: only the shared-Redis cluster sweeps, so
            # no process ends another site's runs and announces it where nobody listens.
            "CHAT_SWEEP_ORPHANS": "1" if env.get("REDIS_URL") else "0",
            **env,
        }
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", *command],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/accounts/login/", process)
        return Server(url, process, log)

    yield start
    for process in started:
        stop(process)


def claude_env(fake_anthropic: Server, **extra: str) -> dict[str, str]:
    """Environment for a daphne process using AnthropicProvider against the fake server."""
    return {
        "ANTHROPIC_API_KEY": "test-key-not-real",
        "ANTHROPIC_BASE_URL": fake_anthropic.url,
        "ANTHROPIC_MAX_RETRIES": "2",
        "ANTHROPIC_READ_TIMEOUT": "1.5",
        **extra,
    }


def cluster_env(fake_anthropic: Server, redis: RedisServer, **extra: str) -> dict[str, str]:
    """Environment for one of several processes sharing PostgreSQL and Redis."""
    return claude_env(
        fake_anthropic,
        REDIS_URL=redis.url,
        CHAT_RUN_LEASE_SECONDS="2",
        CHAT_RUN_HEARTBEAT_SECONDS="0.5",
        **extra,
    )


@pytest.fixture(scope="session")
def cluster(start_daphne, fake_anthropic, redis_server) -> tuple[Server, Server]:
    """Two daphne processes serving one site on PostgreSQL and Redis."""
    env = cluster_env(fake_anthropic, redis_server)
    return start_daphne(**env), start_daphne(**env)


@pytest.fixture(scope="session")
def daphne_demo(start_daphne) -> Server:
    """daphne serving the site with the offline demo provider."""
    return start_daphne(ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="400")


@pytest.fixture(scope="session")
def daphne_quick_heartbeat(start_daphne, fake_anthropic) -> Server:
    """daphne -> fake Anthropic (in-memory layer) whose heartbeats, and with them its check
    of open streams' users (chat/access.py), come every second."""
    return start_daphne(**claude_env(fake_anthropic, CHAT_SSE_HEARTBEAT_SECONDS="1"))


@pytest.fixture(scope="session")
def daphne_anthropic(start_daphne, fake_anthropic) -> Server:
    """daphne serving the site with AnthropicProvider -> real SDK -> fake Anthropic."""
    return start_daphne(**claude_env(fake_anthropic))


# A context window that holds two exchanges of about 1,000 estimated tokens each (with a
# 200-token answer allowance), and a daily budget a few answers spend.
BOUNDED_ENV = {
    "CHAT_CONTEXT_TOKENS": "3000",
    "CHAT_MAX_TOKENS": "200",
    "CHAT_DAILY_TOKEN_BUDGET": "300",
}


@pytest.fixture(scope="session")
def daphne_bounded(start_daphne, fake_anthropic) -> Server:
    """daphne -> fake Anthropic with a small context window and a small daily token budget."""
    return start_daphne(**claude_env(fake_anthropic, **BOUNDED_ENV))
