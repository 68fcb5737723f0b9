"""`python -m chatsite.uvicorn_server`: chatsite on uvicorn, the faster of the two servers.

daphne (`chatsite.server`) stays the default and is fully supported; uvicorn
(with uvloop and httptools) relays each token with less CPU and, under
overload, keeps admitted streams fast (see the README's performance section).
This module gives it what `chatsite.server` gives daphne:

* stream tokens travel in the query string, so the access log redacts them;
* the run manager starts with the server (the ASGI lifespan startup, see
  `chatsite/handlers.py`);
* SIGTERM drains *before* uvicorn waits for open connections: stop accepting,
  let runs finish for `CHAT_DRAIN_SECONDS`, interrupt the rest, close streams
  (browsers reconnect to another process and resume), then exit. Left to
  itself uvicorn would wait for every open stream to end first.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from chatsite.logging import RedactTokensFilter


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
        http="httptools",
        lifespan="on",
        access_log=not args.no_access_log,
        proxy_headers=args.proxy_headers,
    )
    # After Config: it configures logging, which would drop a filter added before.
    logging.getLogger("uvicorn.access").addFilter(RedactTokensFilter())
    ChatsiteUvicorn(config).run()


if __name__ == "__main__":
    main()
