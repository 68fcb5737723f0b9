"""The ASGI handler's request threads: a fixed set, reused, the least busy first."""

from __future__ import annotations

from chatsite.handlers import RequestThreads
from tests.asgi import asgi_request


def test_requests_take_the_least_busy_thread_and_give_it_back_once():
    threads = RequestThreads(3)
    a, b, c = threads.take(), threads.take(), threads.take()
    assert sorted(lease.thread for lease in (a, b, c)) == [0, 1, 2]
    d = threads.take()  # all busy: share the first least busy one
    assert threads.busy[d.thread] == 2
    threads.give(b)
    threads.give(b)  # a stream gives its thread back when it starts, then again at its end
    assert threads.busy[b.thread] == 0
    assert threads.take().thread == b.thread
    for executor in threads.executors:
        executor.shutdown()


def call_asgi(app, method: str, path: str) -> list[dict]:
    """One JSON request through the ASGI app; the messages it sent back."""
    return asgi_request(
        app,
        path,
        method=method,
        body=b"{}",
        headers=[(b"content-type", b"application/json")],
        client=("127.0.0.1", 1234),
        server=("127.0.0.1", 80),
    )


def test_a_send_at_capacity_is_refused_before_django_handles_it(monkeypatch):
    """At capacity, a send gets 503 `overloaded` with Retry-After from the handler itself:
    no middleware ran (no security headers), nothing was authenticated or stored."""
    import json

    from chat.runs import manager
    from chatsite.handlers import ChatsiteASGIHandler

    monkeypatch.setattr(manager, "run_limit", 0)
    app = ChatsiteASGIHandler()
    path = "/api/v1/conversations/00000000-0000-0000-0000-000000000001/messages/"
    start, body = call_asgi(app, "POST", path)
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"retry-after"] == b"2"
    assert b"x-frame-options" not in headers
    assert json.loads(body["body"])["code"] == "overloaded"
    # Reading is never refused for capacity: the same URL's GET reaches Django (401 here).
    assert call_asgi(app, "GET", path)[0]["status"] == 401


def test_the_redis_cache_has_one_client_per_process():
    """Two cache backends (Django makes one per request context under ASGI) share one
    client, so a request does not open a Redis connection of its own."""
    from chatsite.cache import SharedRedisCache

    params = {"OPTIONS": {"socket_timeout": 2}}
    first = SharedRedisCache("redis://127.0.0.1:6379/9", params)
    second = SharedRedisCache("redis://127.0.0.1:6379/9", params)
    assert first._cache is second._cache
