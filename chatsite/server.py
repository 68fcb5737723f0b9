"""`chatsite-serve` / `python -m chatsite.server`: daphne, plus what chatsite needs of it.

* daphne's own access log is replaced by the application's (chatsite/accesslog.py),
  the same line on both servers, with the request id, duration and size, tokens
  redacted (stream tokens travel in the query string: EventSource cannot set
  headers). daphne's `-v 0` (no access log) turns it off.
* Request bodies go to Django as they came. Twisted would parse form bodies
  itself first (daphne never reads the result), and answer a `multipart/form-data`
  body it cannot parse — no boundary — with an empty 400 that Django never sees
  and nobody logs; Django's parser refuses it with the API's JSON error.
* The run manager starts with the server, so a restarted process sweeps
  runs its predecessor left behind even before any request arrives.
* SIGTERM drains: stop listening, let runs finish for `CHAT_DRAIN_SECONDS`,
  interrupt the rest, close streams (browsers reconnect elsewhere), then exit.
* `CHATSITE_BANNER` (what `make run` sets) is printed once the port is bound, with
  the address it is bound to, so a busy port never shows a banner pointing at
  someone else's server: a port that cannot be bound ends the process with a clear
  message and exit status 1. daphne's "HTTP/2 support not enabled" line is dropped:
  HTTP/2 (and TLS) is the reverse proxy's job in front of chatsite (README, Deployment).
* Connections are bounded as `chatsite/transport.py` says: request headers must
  arrive in time, idle keep-alive connections close, and event streams whose
  client does not take what is written are dropped. daphne writes a response
  into Twisted's buffer whatever its size; here, as on uvicorn, the
  application's `send` waits while that buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

# daphne builds its event loop when `daphne.server` is first imported: make it
# uvloop's (a drop-in, faster asyncio loop; Twisted's asyncio reactor runs on
# it). Measured with bench/: see the README's performance section.
with contextlib.suppress(ImportError):
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.web import http
from zope.interface import implementer

from chatsite import accesslog
from chatsite.transport import ConnectionLimits, EventStream, is_event_stream, request_line


class ChatsiteHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel, with a deadline for each request's headers.

    Twisted's own timeout (`timeOut`, the keep-alive here) is an idle timeout: every
    byte restarts it, so a client that trickles its headers is never cut off.
    """

    _header_deadline = None
    _awaiting_headers = True

    def connectionMade(self):
        super().connectionMade()
        self._start_header_deadline()  # a connection that sends nothing is cut off too

    def dataReceived(self, data):
        if self._awaiting_headers and self._header_deadline is None:
            self._start_header_deadline()  # the first byte of the next request
        super().dataReceived(data)

    def allHeadersReceived(self):
        self._awaiting_headers = False
        self._cancel_header_deadline()
        super().allHeadersReceived()

    def requestDone(self, request):
        # Before Twisted's: it parses a pipelined request's buffered bytes at once.
        self._awaiting_headers = True
        super().requestDone(request)

    def connectionLost(self, reason):
        self._cancel_header_deadline()
        super().connectionLost(reason)

    def _start_header_deadline(self):
        timeout = self.factory.limits.header_timeout
        self._header_deadline = self.callLater(timeout, self._headers_too_slow)

    def _cancel_header_deadline(self):
        if self._header_deadline is not None:
            if self._header_deadline.active():
                self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self):
        self._header_deadline = None
        self.timeoutConnection()  # Twisted's: close, and abort if the client holds on


@implementer(IPushProducer)
class ChatsiteRequest(WebRequest):
    """daphne's request, as the producer of its response (Twisted's flow control).

    The transport pauses it when its write buffer passes 64 KiB and resumes it once
    the buffer has drained; meanwhile the application's `send` waits
    (`ChatsiteServer.handle_reply`), as uvicorn's does.
    """

    def __init__(self, *args, **kwargs):
        self.writable = asyncio.Event()
        self.writable.set()
        self._event_stream: EventStream | None = None
        # Without Twisted's form parsing (Twisted 25.5+), which daphne never used: it
        # answered a multipart body without a boundary with an empty, unlogged 400.
        super().__init__(*args, **kwargs, parsePOSTFormSubmission=False)

    def handle_reply(self, message):
        starting = message["type"] == "http.response.start" and not self._response_started
        super().handle_reply(message)
        if starting and not self.finished and self.channel is not None:
            self.registerProducer(self, True)
            if is_event_stream(message.get("headers", ())):
                self._start_event_stream()

    def _start_event_stream(self):
        peer = self.client_addr
        self._event_stream = EventStream(
            sock=self.transport.getHandle(),
            timeout=self.channel.factory.limits.stream_send_timeout,
            abort=self.transport.abortConnection,
            client=f"{peer[0]}:{peer[1]}" if peer else "-",
            request=request_line(
                self.method.decode("latin-1"), self.path.decode("latin-1"), self.query_string
            ),
        )

    # IPushProducer, called by the transport through the channel.
    def pauseProducing(self):
        self.writable.clear()
        if self._event_stream is not None:
            self._event_stream.paused()

    def resumeProducing(self):
        self.writable.set()
        if self._event_stream is not None:
            self._event_stream.resumed()

    def stopProducing(self):
        self.writable.set()  # the connection is lost

    def finish(self):
        if self.producer is not None and self.channel is not None:
            self.unregisterProducer()
        if self._event_stream is not None:
            self._event_stream.finished()
            self._event_stream = None
        super().finish()

    def connectionLost(self, reason):
        self.writable.set()  # a waiting `send` returns; the application hears the disconnect
        if self._event_stream is not None:
            self._event_stream.closed()  # Twisted passes no socket error on
            self._event_stream = None
        super().connectionLost(reason)


class ChatsiteHTTPFactory(HTTPFactory):
    def __init__(self, server):
        super().__init__(server)
        self.limits = ConnectionLimits.from_settings()
        self.timeOut = self.limits.keepalive  # Twisted's idle timeout, off during a request

    def protocol(self):
        # What Twisted's HTTPFactory builds (a wrapper that can switch to HTTP/2 when
        # TLS negotiates it), around our HTTP/1.1 channel.
        return http._GenericHTTPChannelProtocol(ChatsiteHTTPChannel())

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = ChatsiteRequest
        return protocol


class ChatsiteServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        # daphne makes an access logger unless told not to (`-v 0`): ours logs instead.
        accesslog.enabled = action_logger is not None
        super().__init__(*args, action_logger=None, **kwargs)
        self.ports = []

    # daphne's run() makes its HTTP factory inline (`self.http_factory = HTTPFactory(self)`)
    # and listens with it at once: ours takes its place as it is set.
    @property
    def http_factory(self) -> ChatsiteHTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, _daphnes: HTTPFactory) -> None:
        self._http_factory = ChatsiteHTTPFactory(self)

    async def handle_reply(self, protocol, message):
        await super().handle_reply(protocol, message)
        writable = getattr(protocol, "writable", None)
        if writable is not None and not writable.is_set():
            await writable.wait()  # the client has 64 KiB of this response unread

    def listen_success(self, port):
        self.ports.append(port)
        result = super().listen_success(port)
        banner = os.environ.get("CHATSITE_BANNER")
        if banner and hasattr(port, "getHost"):
            address = port.getHost()
            print(banner.format(host=address.host, port=address.port), flush=True)
        return result

    def listen_error(self, failure):
        # daphne logs "Listen failure" and stops the reactor, and the process then exits 0
        # as if it had served: say what went wrong, and fail (see main()).
        self.listen_failed = failure.getErrorMessage()
        print(f"chatsite: cannot listen: {self.listen_failed}", file=sys.stderr, flush=True)
        print(
            "chatsite: is another server using that address? Choose another port, "
            "e.g. `make run PORT=8001`.",
            file=sys.stderr,
            flush=True,
        )
        return super().listen_error(failure)

    def run(self):
        from chat.providers import get_provider

        get_provider()  # import the SDK now, not on the event loop during the first run
        reactor.callWhenRunning(self._start_run_manager)
        reactor.addSystemEventTrigger("before", "shutdown", self._drain)
        super().run()

    def _start_run_manager(self):
        from chatsite.startup import process_started

        self._started = asyncio.get_event_loop().create_task(process_started())

    def _drain(self):
        from chat.runs import manager

        for port in self.ports:
            port.stopListening()  # new connections go to the other processes
        return defer.Deferred.fromFuture(asyncio.get_event_loop().create_task(manager.drain()))


class ChatsiteCommandLine(CommandLineInterface):
    server_class = ChatsiteServer

    def run(self, args):
        super().run(args)
        if getattr(self.server, "listen_failed", None):
            sys.exit(1)


class _WithoutHttp2Notice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("HTTP/2 support not enabled")


def main() -> None:
    logging.getLogger("daphne.server").addFilter(_WithoutHttp2Notice())
    ChatsiteCommandLine.entrypoint()


if __name__ == "__main__":
    main()
