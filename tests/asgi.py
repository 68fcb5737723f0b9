"""One HTTP request through an ASGI application in the test process, without a server."""

from __future__ import annotations

import asyncio


def asgi_request(
    app,
    path: str,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers=(),
    host: bytes = b"127.0.0.1",
    body: bytes = b"",
    client: tuple[str, int] | None = ("127.0.0.1", 40000),
    server: tuple[str, int] = ("127.0.0.1", 8000),
) -> list[dict]:
    """The messages `app` sent back for one request (`http.response.start` first)."""
    sent: list[dict] = []
    received = []

    async def receive():
        if received:  # the client stays connected until the response is done
            await asyncio.sleep(3600)
        received.append(True)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", host), *headers],
        "client": client,
        "server": server,
    }
    asyncio.run(app(scope, receive, send))
    return sent
