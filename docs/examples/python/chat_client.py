"""A chatsite API client in one file: send, stream, resume after a drop, stop.

    pip install httpx httpx-sse
    python chat_client.py http://127.0.0.1:8000 demo demo

What it does, in the order a real client would (the contract: docs/api.md, docs/streaming.md):

1. logs in for a JWT pair and creates a conversation;
2. mints a stream token and opens the conversation's event stream, *then* sends a message
   (a stream opened first misses nothing);
3. prints the answer's text as it arrives, drops the connection mid-answer on purpose and
   reconnects with `Last-Event-ID`: the server sends exactly the text that was missing;
4. sends a second message and stops its answer, which ends `cancelled` with its partial text.

Each answer ends with two `==` lines: its status and length, and its text as a JSON string
(what the tests compare with the stored message).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

import httpx
from httpx_sse import connect_sse


class ApiError(Exception):
    """Every API error has one body: {"code", "message"} (plus `errors` for validation)."""

    def __init__(self, response: httpx.Response) -> None:
        body = response.json()
        super().__init__(f"{response.status_code} {body['code']}: {body['message']}")
        self.status, self.code = response.status_code, body["code"]


class ChatClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        # Access tokens live 15 minutes; a long-lived client refreshes them with
        # POST /api/v1/auth/token/refresh/ {"refresh": ...} (each refresh token works once).
        tokens = self.post("/api/v1/auth/token/", {"username": username, "password": password})
        self.http.headers["Authorization"] = f"Bearer {tokens['access']}"

    def post(self, path: str, body: dict | None = None) -> dict:
        response = self.http.post(path, json=body)
        if response.is_error:
            raise ApiError(response)
        return response.json()

    def stream_url(self, conversation_id: str) -> str:
        # EventSource-style clients cannot send an Authorization header, so a stream is
        # opened with a short-lived token in its URL, good for this conversation only.
        return self.post(f"/api/v1/conversations/{conversation_id}/stream-token/")["stream_url"]

    def stored_message(self, conversation_id: str, message_id: str) -> dict:
        # The newest page of the history, newest first: the answer we just read is on it.
        page = self.http.get(
            f"/api/v1/conversations/{conversation_id}/messages/",
            params={"ordering": "-created_at", "page_size": 10},
        ).json()
        return next(m for m in page["results"] if m["id"] == message_id)


class Answer:
    """One answer as this client assembles it from the stream's events."""

    def __init__(self, message_id: str) -> None:
        self.id, self.text, self.status = message_id, "", None
        self.last_event_id: str | None = None  # what to send as Last-Event-ID

    def read(self, events, *, stop_after: int | None = None) -> bool:
        """Apply events until this answer ends (True), `stop_after` characters have
        arrived, or the server closes the stream (False). Other messages are skipped."""
        for event, data, event_id in events:
            if event == "reset":  # the server will send the message again in full
                self.text = ""
                continue
            message_id = data["message"]["id"] if event == "message_start" else None
            if (message_id or data.get("message_id")) != self.id:
                continue  # another message, or about the stream (`auth_revoked`)
            if event == "delta":
                # A delta's id is "<message id>:<characters the client now has>": proof
                # that nothing was skipped or repeated (the server guarantees it).
                if event_id != f"{self.id}:{len(self.text) + len(data['text'])}":
                    raise AssertionError(f"gap or repeat at {event_id}")
                self.text += data["text"]
                print(data["text"], end="", flush=True)
            elif event == "error":
                print(f"\n== error {data['code']}: {data['message']}", flush=True)
            elif event == "message_end":
                self.status = data["status"]
            self.last_event_id = event_id or self.last_event_id
            if self.status:
                return True
            if stop_after is not None and len(self.text) >= stop_after:
                return False
        return False


@contextmanager
def open_stream(client: ChatClient, conversation_id: str, last_event_id: str | None = None):
    """The conversation's event stream as (event, data, id) tuples; closed on exit."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    url = client.stream_url(conversation_id)
    with connect_sse(client.http, "GET", url, headers=headers, timeout=60.0) as source:
        # Refusals (401, 404, 429, 503) are plain JSON responses before any stream starts.
        if source.response.is_error:
            source.response.read()
            raise ApiError(source.response)
        # The server subscribed before answering 200: from here on, nothing is missed.
        yield (
            (sse.event, json.loads(sse.data), sse.id)
            for sse in source.iter_sse()
            if sse.data  # skip the opening `retry:` block
        )


def report(client: ChatClient, conversation_id: str, answer: Answer) -> None:
    stored = client.stored_message(conversation_id, answer.id)
    print(f"\n== answer {answer.id}: {answer.status}, {len(answer.text)} characters", end="")
    print(f"; stored: {stored['status']}, same text: {stored['content'] == answer.text}")
    print(f"== text: {json.dumps(answer.text)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("username")
    parser.add_argument("password")
    parser.add_argument("--drop-after", type=int, default=40, help="characters before the drop")
    args = parser.parse_args(argv)

    client = ChatClient(args.base_url, args.username, args.password)
    conversation = client.post("/api/v1/conversations/", {"title": "API example"})
    conversation_id = conversation["id"]
    messages = f"/api/v1/conversations/{conversation_id}/messages/"
    print(f"== conversation {conversation_id}")

    # 1. Open the stream first, then send: the answer's events reach us from its start.
    #    (Sending first is fine too: a fresh stream gets the text so far in one delta.)
    with open_stream(client, conversation_id) as events:
        sent = client.post(messages, {"content": "Hello! How does streaming work here?"})
        answer = Answer(sent["assistant_message"]["id"])
        print(f"== sent; answer {answer.id} is {sent['assistant_message']['status']}")
        # 2. Read part of the answer, then leave the block: the connection is closed
        #    mid-answer, as a flaky network would. The answer goes on on the server.
        ended = answer.read(events, stop_after=args.drop_after)
    if not ended:
        print(f"\n== connection dropped; resuming with Last-Event-ID {answer.last_event_id}")
    # 3. Reconnect with the last id we saw until the answer ends. (A real client waits the
    #    stream's `retry:` interval between attempts.)
    for _attempt in range(5):
        if ended:
            break
        with open_stream(client, conversation_id, answer.last_event_id) as events:
            ended = answer.read(events)
    report(client, conversation_id, answer)

    # 4. A second message, stopped mid-answer. The cancel call waits briefly for the run
    #    to save; the stream then carries `message_end` with status `cancelled`.
    with open_stream(client, conversation_id) as events:
        sent = client.post(messages, {"content": "Now tell me a long story, please."})
        stopped = Answer(sent["assistant_message"]["id"])
        stopped.read(events, stop_after=args.drop_after)
        try:
            cancelled = client.post(f"/api/v1/messages/{stopped.id}/cancel/")
            print(f"\n== stop requested: the answer is {cancelled['status']}")
        except ApiError as error:
            if error.code != "message_finished":
                raise
            print("\n== the answer finished before the stop arrived")
        stopped.read(events)
    report(client, conversation_id, stopped)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ApiError as error:
        sys.exit(f"API error: {error}")
