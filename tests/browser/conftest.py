"""Fixtures for real-browser tests: Debian's Chromium driven by Playwright (sync API).

The browser is launched once and shared by every test in this package; each test gets fresh
browser contexts (own cookies, storage and cache) from the ``open_context`` factory.

Why package scope and not session scope: while Playwright's sync API is running, its asyncio
loop is registered as the *running* loop of the main thread. Left running for the rest of
the session, it would break every later test that calls ``asyncio.run()`` or
``async_to_sync()`` (tests/chat and tests/e2e sort after tests/browser). For the same reason
Django's async-safety guard would refuse ORM calls made by the test process itself (fixtures,
``transaction=True`` flushes, assertions) while the browser runs, although they are plain
synchronous code on the main thread (Playwright's loop is merely suspended in another
greenlet). So, for exactly as long as Playwright runs, the guard's loop lookup is told to
ignore *that one loop* (any other running loop still trips it). This is deliberately not done
with ``DJANGO_ALLOW_ASYNC_UNSAFE``: the daphne processes inherit the environment, and the
servers under test must keep Django's guard.

The browser is launched lazily from inside the test body, so a missing Chromium makes the
test FAIL (not error or skip) with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import django.utils.asyncio as django_asyncio
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 15_000  # every Playwright wait is bounded by this unless a test says less


class SharedBrowser:
    """Starts Playwright and Chromium on first use; stops both at package teardown."""

    def __init__(self) -> None:
        self._playwright = None
        self._browser = None
        self._original_get_running_loop = None

    def get(self):
        if self._browser is None:
            if not CHROMIUM.exists():
                pytest.fail(
                    f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                    "(apt-get install chromium). Playwright's own browser download is not used.",
                    pytrace=False,
                )
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self._exempt_from_django_async_guard(asyncio.get_running_loop())
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()
        finally:
            self._browser = self._playwright = None
            if self._original_get_running_loop is not None:
                django_asyncio.get_running_loop = self._original_get_running_loop
                self._original_get_running_loop = None

    def _exempt_from_django_async_guard(self, playwright_loop) -> None:
        original = self._original_get_running_loop = django_asyncio.get_running_loop

        def get_running_loop():
            loop = original()
            if loop is playwright_loop:
                raise RuntimeError("only Playwright's suspended loop is running in this thread")
            return loop

        django_asyncio.get_running_loop = get_running_loop


@pytest.fixture(scope="package")
def shared_browser() -> Iterator[SharedBrowser]:
    """One Chromium for the whole tests/browser package (see the module docstring)."""
    shared = SharedBrowser()
    yield shared
    shared.close()


@pytest.fixture
def open_context(shared_browser) -> Iterator[Callable]:
    """Factory: ``open_context(**new_context_kwargs)`` -> a fresh BrowserContext.

    Defaults: a 1280x800 desktop viewport, light colour scheme, 15 s timeouts. Every context
    opened by a test is closed after it.
    """
    contexts = []

    def open_(**kwargs):
        options = {"viewport": {"width": 1280, "height": 800}, "color_scheme": "light"}
        options.update(kwargs)
        context = shared_browser.get().new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()


def _anthropic_env(fake_anthropic) -> dict[str, str]:
    """The same provider settings as the ``daphne_anthropic`` fixture in tests/conftest.py."""
    return {
        "ANTHROPIC_API_KEY": "test-key-not-real",
        "ANTHROPIC_BASE_URL": fake_anthropic.url,
        "ANTHROPIC_MAX_RETRIES": "2",
        "ANTHROPIC_READ_TIMEOUT": "1.5",
    }


@pytest.fixture(scope="package")
def daphne_short_token(start_daphne, fake_anthropic):
    """daphne -> fake Anthropic, with stream tokens that expire after 2 seconds."""
    return start_daphne(CHAT_STREAM_TOKEN_LIFETIME_SECONDS="2", **_anthropic_env(fake_anthropic))


@pytest.fixture(scope="package")
def daphne_slow_demo(start_daphne):
    """daphne with the offline demo provider at a readable pace (for the README screenshots)."""
    return start_daphne(ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="8")


@pytest.fixture(scope="package")
def daphne_short_pages(start_daphne):
    """daphne with the demo provider and pages of 4 messages, so a short history is long."""
    return start_daphne(
        ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="400", CHAT_MESSAGE_PAGE_SIZE="4"
    )


class DroppableProxy:
    """A TCP proxy in front of a server that can cut every open connection on demand.

    Chromium's offline emulation (``BrowserContext.set_offline``) does not touch an
    EventSource response that is already streaming, so a test that needs the page's stream
    to drop mid-answer loads the page through this proxy and calls ``drop_connections()``:
    the browser sees its connections end, exactly as on a real network hiccup.
    """

    def __init__(self, target_url: str) -> None:
        self._target = ("127.0.0.1", int(target_url.rsplit(":", 1)[1]))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.dropped = 0
        threading.Thread(target=self._accept, name="droppable-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_connections(self) -> int:
        """Cut every connection open right now (both directions); returns how many sockets."""
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)
        self.dropped += len(sockets)
        return len(sockets)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        self.drop_connections()


@pytest.fixture
def droppable_proxy() -> Iterator[Callable[[str], DroppableProxy]]:
    """Factory: ``droppable_proxy(server.url)`` -> a DroppableProxy; all closed after the test."""
    proxies: list[DroppableProxy] = []

    def start(target_url: str) -> DroppableProxy:
        proxies.append(DroppableProxy(target_url))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()
