"""Peer: the minimal relay a Python developer would write with sse-starlette on uvicorn.

GET /stream   POST the upstream's /v1/messages with stream=true (httpx, the usual
              choice), re-emit each text delta as `event: delta` / `data: {"text": ...}`,
              then `event: message_end`. Leaving early closes the upstream request.
GET /idle     an SSE stream that sends `retry:` and then heartbeats only (sse-starlette's
              `ping`, every 15 s like chatsite), for the idle-streams figure.
GET /health   200.

Serve: BENCH_UPSTREAM_URL=http://127.0.0.1:PORT \
       uvicorn bench.peers.starlette_relay:app --host 127.0.0.1 --port 8001

httpx's default pool allows 100 connections, which alone would cap this relay at 100
streams; a developer who expects thousands of streams raises it, and so do we.
"""

from __future__ import annotations

import asyncio
import json
import os

import httpx
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8099")
HEARTBEAT_SECONDS = 15

client = httpx.AsyncClient(
    base_url=UPSTREAM,
    headers={"x-api-key": "bench", "anthropic-version": "2023-06-01"},
    limits=httpx.Limits(max_connections=20_000, max_keepalive_connections=20_000),
    timeout=httpx.Timeout(60.0, connect=10.0),
)

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "stream": True,
    "messages": [{"role": "user", "content": "bench"}],
}


async def relay():
    async with client.stream("POST", "/v1/messages", json=BODY) as upstream:
        upstream.raise_for_status()
        event = ""
        async for line in upstream.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "content_block_delta":
                delta = json.loads(line[5:])["delta"]
                if delta.get("type") == "text_delta":
                    yield ServerSentEvent(data=json.dumps({"text": delta["text"]}), event="delta")
    yield ServerSentEvent(data="{}", event="message_end")


async def stream(request: Request) -> EventSourceResponse:
    return EventSourceResponse(relay(), ping=HEARTBEAT_SECONDS)


async def idle_events():
    yield ServerSentEvent(retry=2000)
    await asyncio.Event().wait()  # forever; sse-starlette sends the pings


async def idle(request: Request) -> EventSourceResponse:
    return EventSourceResponse(idle_events(), ping=HEARTBEAT_SECONDS)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/stream", stream), Route("/idle", idle), Route("/health", health)],
)
