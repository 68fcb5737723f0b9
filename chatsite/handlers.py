"""Django's ASGI handler, minus one thread and one database connection per open stream.

Django runs each request's sync code (all of our middleware is sync) on a
thread of the request's own, and keeps that thread, and the database
connection the request opened on it, until the response ends. For a
Server-Sent Events stream the response lasts minutes, so every open stream
held an idle thread (~100 KB) and a pooled database connection: 1,000 streams
made 1,000 threads, and a pool of 10 let only 10 streams open at once.

Once a streaming response starts, nothing of the request needs that thread:
the stream's own database reads run on a shared pool (see `chat/relay.py`).
So this handler closes the thread's connections (handing them back to the
pool) and lets the thread go before the first byte is sent.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import SyncToAsync
from django.core.handlers.asgi import ASGIHandler
from django.db import connections


class ChatsiteASGIHandler(ASGIHandler):
    async def send_response(self, response, send):
        if response.streaming:
            await release_request_thread()
        return await super().send_response(response, send)


async def release_request_thread() -> None:
    """End the current request's thread-sensitive thread, closing its connections first."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is None:
        return
    # Connections are per thread: close them on the thread that opened them.
    await asyncio.wrap_future(executor.submit(connections.close_all))
    # A later thread-sensitive call in this request (the response's close, at
    # the end) gets a fresh thread, which the request's context shuts down.
    executor.shutdown(wait=False)
