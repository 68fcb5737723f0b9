"""`python -m chatsite.uvicorn_server`: chatsite on uvicorn, the faster of the two servers.

daphne (`chatsite.server`) stays the default and is fully supported; uvicorn
(with uvloop and httptools) relays each token with less CPU and, under
overload, keeps admitted streams fast (see the README's performance section).
This module gives it what `chatsite.server` gives daphne:

* uvicorn's access log is replaced by the application's (chatsite/accesslog.py):
  the same line as on daphne, tokens redacted; uvicorn leaves logging to Django's
  `LOGGING`, so its own lines are text or JSON like the rest;
* the run manager starts with the server (the ASGI lifespan startup, see
  `chatsite/handlers.py`);
* SIGTERM drains *before* uvicorn waits for open connections: stop accepting,
  let runs finish for `CHAT_DRAIN_SECONDS`, interrupt the rest, close streams
  (browsers reconnect to another process and resume), then exit. Left to
  itself uvicorn would wait for every open stream to end first;
* connections are bounded as `chatsite/transport.py` says: uvicorn has a
  keep-alive timeout but none for headers (a connection that sends part of a
  request, or nothing, stays open for ever), and it lets a response wait for a
  client that does not read for as long as the client likes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatsite import accesslog
from chatsite.transport import ConnectionLimits, EventStream, is_event_stream, request_line


class ChatsiteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), with a deadline for each request's
    headers and a watch on event streams."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = ConnectionLimits.from_settings()
        self.timeout_keep_alive = self.limits.keepalive
        self._header_deadline = None
        self._event_stream: EventStream | None = None
        # Every request of this connection goes through `_serve`, which sees its response
        # start (and whether it is an event stream).
        self._application, self.app = self.app, self._serve

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_deadline()  # a connection that sends nothing is cut off too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._start_header_deadline()  # the first byte of a request

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self._event_stream is not None:
            self._event_stream.finished()
            self._event_stream = None
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        if self._event_stream is not None:
            self._event_stream.closed(exc)
            self._event_stream = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._event_stream is not None:
            self._event_stream.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._event_stream is not None:
            self._event_stream.resumed()

    def _start_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(
            self.limits.header_timeout, self._headers_too_slow
        )

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self.transport.close()

    async def _serve(self, scope, receive, send) -> None:
        async def send_watched(message) -> None:
            if message["type"] == "http.response.start" and is_event_stream(
                message.get("headers", ())
            ):
                self._start_event_stream(scope)
            await send(message)

        await self._application(scope, receive, send_watched)

    def _start_event_stream(self, scope) -> None:
        client = scope.get("client")
        self._event_stream = EventStream(
            sock=self.transport.get_extra_info("socket"),
            timeout=self.limits.stream_send_timeout,
            abort=self.transport.abort,
            client=f"{client[0]}:{client[1]}" if client else "-",
            request=request_line(scope["method"], scope["path"], scope["query_string"]),
        )
        if self.flow.write_paused:
            self._event_stream.paused()


class ChatsiteUvicorn(uvicorn.Server):
    async def shutdown(self, sockets=None) -> None:
        from chat.runs import manager

        for server in self.servers:
            server.close()  # new connections go to the other processes
        await manager.drain()
        await super().shutdown(sockets)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chatsite.uvicorn_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-*")
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        "chatsite.asgi:application",
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        loop="uvloop",
        http=ChatsiteHttpToolsProtocol,
        lifespan="on",
        access_log=False,  # the application's is written instead
        log_config=None,  # Django's LOGGING, once the application is loaded
        proxy_headers=args.proxy_headers,
    )
    accesslog.enabled = not args.no_access_log
    ChatsiteUvicorn(config).run()


if __name__ == "__main__":
    main()
