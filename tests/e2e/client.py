"""An API client that talks to a real server over HTTP, as a third-party client would."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
from httpx_sse import EventSource, connect_sse

from chat.models import Message


@dataclass
class StreamRead:
    events: list = field(default_factory=list)  # (event, data, id)

    def of(self, name: str) -> list:
        return [e for e in self.events if e[0] == name]

    def text(self, message_id: str) -> str:
        return "".join(
            d["text"] for n, d, _ in self.events if n == "delta" and d["message_id"] == message_id
        )


class OpenStream:
    """A connected SSE stream, subscribed on the server (its `retry:` block was read)."""

    def __init__(self, source: EventSource, timeout: float) -> None:
        self.source = source
        self.events = source.iter_sse()
        self.timeout = timeout
        self.retry = next(self.events).retry  # the server's first block, sent after subscribing
        assert self.retry is not None

    def read(self, *, until_end_of: str | None = None, max_events: int | None = None) -> StreamRead:
        """Events until `until_end_of`'s `message_end`, or until `max_events` were read."""
        read = StreamRead()
        deadline = time.monotonic() + self.timeout
        for sse in self.events:
            assert time.monotonic() < deadline, "stream read timed out"
            if not sse.data:
                continue
            read.events.append((sse.event, json.loads(sse.data), sse.id))
            if max_events is not None and len(read.events) >= max_events:
                break
            if sse.event == "message_end" and read.events[-1][1]["message_id"] == until_end_of:
                break
        return read


class ChatApi:
    def __init__(
        self, base_url: str, username: str, password: str, *, verify: ssl.SSLContext | bool = True
    ) -> None:
        """`verify`: how HTTPS certificates are checked (a proxy with a test certificate)."""
        self.base_url = base_url
        self.verify = verify
        self.http = httpx.Client(base_url=base_url, timeout=30.0, verify=verify)
        tokens = self.http.post(
            "/api/v1/auth/token/", json={"username": username, "password": password}
        )
        tokens.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {tokens.json()['access']}"

    def create_conversation(self, **fields) -> dict:
        response = self.http.post("/api/v1/conversations/", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    def send(self, conversation_id: str, content: str) -> dict:
        response = self.http.post(
            f"/api/v1/conversations/{conversation_id}/messages/", json={"content": content}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def stream_url(self, conversation_id: str) -> str:
        response = self.http.post(f"/api/v1/conversations/{conversation_id}/stream-token/")
        assert response.status_code == 201, response.text
        return response.json()["stream_url"]

    @contextmanager
    def stream(
        self,
        conversation_id: str,
        *,
        last_event_id: str | None = None,
        timeout: float = 20.0,
        resume_via: str = "header",
        url: str | None = None,
    ) -> Iterator[OpenStream]:
        """Mint a stream token and open the conversation stream, as the chat page does
        (or open the stream `url` a mint returned earlier).

        `last_event_id` is sent as the `Last-Event-ID` header (what EventSource does on
        its own reconnects) or, with `resume_via="query"`, as the `last_event_id` query
        parameter (what a page reload does).
        """
        url = url or self.stream_url(conversation_id)
        headers = {}
        if last_event_id:
            if resume_via == "header":
                headers["Last-Event-ID"] = last_event_id
            elif resume_via == "query":
                url += ("&" if "?" in url else "?") + urlencode({"last_event_id": last_event_id})
            else:
                raise ValueError(f"resume_via must be 'header' or 'query', not {resume_via!r}")
        with (
            httpx.Client(base_url=self.base_url, timeout=timeout, verify=self.verify) as client,
            connect_sse(client, "GET", url, headers=headers) as source,
        ):
            assert source.response.status_code == 200
            yield OpenStream(source, timeout)

    def send_and_read(self, conversation_id: str, content: str) -> tuple[str, StreamRead]:
        """Open the stream, send, read until the answer ends: (assistant id, events)."""
        with self.stream(conversation_id) as stream:
            assistant_id = self.send(conversation_id, content)["assistant_message"]["id"]
            return assistant_id, stream.read(until_end_of=assistant_id)


def fake(**directives) -> str:
    """A `[[fake:...]]` directive for the fake Anthropic server; `text` is base64-encoded."""
    parts = []
    for key, value in directives.items():
        if key == "text":
            value = base64.urlsafe_b64encode(value.encode()).decode()
        parts.append(key if value is True else f"{key}={value}")
    return f"[[fake:{','.join(parts)}]]"


def wait_for_final(message_id: str, timeout: float = 15.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = Message.objects.get(pk=message_id)
        if not message.is_active:
            return message
        time.sleep(0.05)
    raise AssertionError(f"message {message_id} still {message.status} after {timeout}s")
