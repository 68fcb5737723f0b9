"""`chatsite-serve` / `python -m chatsite.server`: daphne, plus what chatsite needs of it.

* daphne's access log prints each request's full path, query string included,
  and stream tokens travel in the query string (EventSource cannot set
  headers): the access logger here redacts them (see `chatsite/logging.py`).
* Request bodies go to Django as they came. Twisted would parse form bodies
  itself first (daphne never reads the result), and answer a `multipart/form-data`
  body it cannot parse — no boundary — with an empty 400 that Django never sees
  and nobody logs; Django's parser refuses it with the API's JSON error.
* The run manager starts with the server, so a restarted process sweeps
  runs its predecessor left behind even before any request arrives.
* SIGTERM drains: stop listening, let runs finish for `CHAT_DRAIN_SECONDS`,
  interrupt the rest, close streams (browsers reconnect elsewhere), then exit.
"""

from __future__ import annotations

import asyncio
import contextlib

# daphne builds its event loop when `daphne.server` is first imported: make it
# uvloop's (a drop-in, faster asyncio loop; Twisted's asyncio reactor runs on
# it). Measured with bench/: see the README's performance section.
with contextlib.suppress(ImportError):
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

import daphne.server  # imported after the loop policy is set
from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.internet import defer, reactor

from chatsite.logging import redact


class RedactingAccessLog(AccessLogGenerator):
    def __call__(self, protocol, action, details):
        if "path" in details:
            details = {**details, "path": redact(details["path"])}
        super().__call__(protocol, action, details)


class BodyAsSentRequest(WebRequest):
    """daphne's request, without Twisted's form parsing (Twisted 25.5+)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs, parsePOSTFormSubmission=False)


class ChatsiteHTTPFactory(HTTPFactory):
    """daphne's HTTP factory, making `BodyAsSentRequest`s."""

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BodyAsSentRequest
        return protocol


class ChatsiteServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)
        self.ports = []

    def listen_success(self, port):
        self.ports.append(port)
        return super().listen_success(port)

    def run(self):
        from chat.providers import get_provider

        get_provider()  # import the SDK now, not on the event loop during the first run
        # daphne makes its HTTP factory and listens within `Server.run`: use ours there.
        daphne.server.HTTPFactory = ChatsiteHTTPFactory
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


def main() -> None:
    ChatsiteCommandLine.entrypoint()


if __name__ == "__main__":
    main()
