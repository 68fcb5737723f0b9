"""Django's ASGI handler, with request threads that are reused and let go of by streams.

Django runs each request's sync code (all of our middleware is sync, and DRF's
views) on a thread it makes for that request, and keeps the thread, and the
database connection the request opened on it, until the response ends. That
costs twice:

* every request starts a thread, and opens a database connection (and a cache
  connection) on it, then throws all of them away;
* a Server-Sent Events response lasts minutes, so every open stream held an
  idle thread and a pooled database connection: 1,000 streams made 1,000
  threads, and a pool of 10 let only 10 streams open at once.

So this handler gives each request one of a fixed set of long-lived threads
(the least busy; asgiref's `ThreadSensitiveContext(executor=...)`), whose
connections are reused like a WSGI server's threads'. When a streaming
response starts, nothing of the request needs its thread any more (the
stream's own reads use a shared pool, see `chat/relay.py`): its connections
are handed back and the thread is free for other requests.

Two kinds of request are refused here, before Django builds a request: a body
over the upload limit (413, see `_declared_too_large` and `read_body`) and a
send while the process is at capacity (503, see `_refused_for_capacity`). The
probes (`/healthz`, `/readyz`, `/metrics`: chatsite/probes.py) are answered here
too. Every request gets its id and its access-log line here (chatsite/accesslog.py),
whichever server runs the site.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from django.urls import Resolver404, resolve

from chat.conf import chat_settings
from chat.errors import Overloaded, RequestTooLarge
from chatsite import accesslog, probes


@dataclass
class _Lease:
    thread: int
    released: bool = False


class RequestThreads:
    """`size` single-thread executors; a request takes the least busy one."""

    def __init__(self, size: int) -> None:
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{i}")
            for i in range(size)
        ]
        self.busy = [0] * size

    def take(self) -> _Lease:
        index = min(range(len(self.busy)), key=self.busy.__getitem__)
        self.busy[index] += 1
        return _Lease(index)

    def give(self, lease: _Lease) -> None:
        if not lease.released:
            lease.released = True
            self.busy[lease.thread] -= 1


def _refused_for_capacity(path: str) -> bool:
    """A request that would start a run (a send, a regenerate) while this process is at
    capacity (`RunManager.has_capacity`).

    Past saturation most requests are such refusals (every waiting client retries), so
    they are answered here, before Django builds a request and runs middleware and DRF:
    measured at C = 1,000, refusals through the whole stack cost about 1.4 ms of CPU
    each, and ate most of the core that admitted streams needed.
    """
    from chat.runs import manager

    if manager.has_capacity():
        return False
    try:
        view = resolve(path).func
    except Resolver404:
        return False
    return getattr(getattr(view, "cls", None), "starts_a_run", False)


def _body_limit() -> int | None:
    """Bytes a request body may have: Django's `DATA_UPLOAD_MAX_MEMORY_SIZE`, for the
    whole body (the site takes no file uploads, which Django's limit leaves out)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request bodies are limited to {limit} bytes.")


def _declared_too_large(scope) -> RequestTooLarge | None:
    """A body whose Content-Length is over the limit: refused before a byte of it is read.

    Django would read it and then raise `RequestDataTooBig` where the view first touches
    the body: a 400 HTML page and a traceback in the log, for a client's mistake.
    """
    limit = _body_limit()
    if limit is None:
        return None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return _too_large(limit) if int(value) > limit else None
            except ValueError:
                return None  # the server refuses a malformed Content-Length itself
    return None


class _BodyOverLimit(Exception):
    """A body without a Content-Length (chunked) grew past the limit while it was read."""


async def _send_json(send, error) -> None:
    body = json.dumps(error.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_lease: contextvars.ContextVar[_Lease] = contextvars.ContextVar("request_thread_lease")


class ChatsiteASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads(chat_settings.REQUEST_THREADS)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        log = accesslog.RequestLog(scope, accesslog.id_for(scope))
        token = accesslog.request_id.set(log.id)
        try:
            await self._serve(scope, receive, log.wrap(send))
        finally:
            log.write()
            accesslog.request_id.reset(token)

    async def _serve(self, scope, receive, send):
        if (probe := probes.probe_for(scope)) is not None:
            await probe(scope, send)
            return
        if too_large := _declared_too_large(scope):
            await _send_json(send, too_large)
            return
        if scope["method"] == "POST" and _refused_for_capacity(scope["path"]):
            await _send_json(send, Overloaded())
            return
        lease = self.threads.take()
        token = _lease.set(lease)
        try:
            executor = self.threads.executors[lease.thread]
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        except _BodyOverLimit:
            await _send_json(send, _too_large(_body_limit()))
        finally:
            _lease.reset(token)
            self.threads.give(lease)

    async def _lifespan(self, receive, send) -> None:
        """Servers that speak the ASGI lifespan protocol (uvicorn) start the run
        manager with the process and drain it at shutdown; daphne does both in
        `chatsite.server` instead."""
        from chat.runs import manager
        from chatsite.startup import process_started

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await process_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if not manager.draining:
                    await manager.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def read_body(self, receive):
        """Django's, stopped at the body limit: a chunked body has no Content-Length to
        refuse it by, and Django would spool all of it to disk first."""
        limit = _body_limit()
        if limit is None:
            return await super().read_body(receive)
        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyOverLimit
            return message

        return await super().read_body(receive_within_limit)

    async def send_response(self, response, send):
        if response.streaming:
            await self._let_go_of_thread()
        return await super().send_response(response, send)

    async def _let_go_of_thread(self) -> None:
        lease = _lease.get(None)
        if lease is None:
            return
        # Connections are per thread: hand them back on the thread that opened
        # them (a pooled PostgreSQL connection returns to the pool; a persistent
        # SQLite connection stays for the thread's next request).
        executor = self.threads.executors[lease.thread]
        await asyncio.wrap_future(executor.submit(close_old_connections))
        self.threads.give(lease)
