"""Request ids and the access log, the same whichever server runs the site.

daphne and uvicorn each wrote an access log of their own, in formats of their own
(uvicorn's without size or duration). Both are off, and the ASGI handler
(`chatsite/handlers.py`) writes one line per request to the `chatsite.access` logger
when its response ends, with the method, the path (tokens redacted), the status, the
bytes of the body, the duration and the request id — text or JSON like every other
line (`DJANGO_LOG_FORMAT`). An event stream is logged when it ends; its duration is
the stream's life.

Every request has an id: the proxy's `X-Request-ID` if it sent a well-formed one,
else a new one. It is echoed in the response's `X-Request-ID` and set in a context
variable for the request's whole life — its request thread, its async view and its
stream — so each log line of the request carries it (`chatsite.logging.RequestIdFilter`).
Runs are not requests: they start in a fresh context and log without one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from chatsite.logging import redact, request_id

logger = logging.getLogger("chatsite.access")

__all__ = ["RequestLog", "id_for", "request_id"]

# What a proxy's id may look like: a UUID, a hex string, nginx's $request_id, a trace id.
# Anything else (too long, spaces, line breaks, quotes) is replaced, not logged.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")

_PROBES = frozenset({"/healthz", "/readyz"})

# Set by the server's entry point: `python -m chatsite.server -v 0` (no access log for
# daphne) or `python -m chatsite.uvicorn_server --no-access-log`.
enabled = True


def id_for(scope) -> str:
    """The proxy's `X-Request-ID`, if well-formed; else a new id."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _WELL_FORMED.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestLog:
    """One request's line: `send` is wrapped to see its status and count its bytes."""

    __slots__ = ("bytes", "id", "scope", "started", "status", "written")

    def __init__(self, scope, rid: str) -> None:
        self.scope = scope
        self.id = rid
        self.started = time.monotonic()
        self.status: int | None = None
        self.bytes = 0
        self.written = False

    def wrap(self, send):
        header = (b"x-request-id", self.id.encode("latin-1"))

        async def send_logged(message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                self.bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Before the response's end reaches the client: whoever reads the
                    # log after a response finds its line.
                    self.write()
            elif kind == "http.response.start":
                self.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        return send_logged

    def write(self) -> None:
        """Log the request (once: at its response's end, or when it ends without one)."""
        if self.written or not enabled:
            return
        self.written = True
        scope = self.scope
        client = scope.get("client")
        # The raw path: the decoded one could write a line break into a text log.
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if query := scope.get("query_string", b"").decode("latin-1"):
            path = f"{path}?{query}"
        path = redact(path)
        method = scope["method"]
        status = self.status or 0  # 0: the client left before any response
        duration = time.monotonic() - self.started
        peer = f"{client[0]}:{client[1]}" if client else "-"
        # A load balancer probes every few seconds: a probe that passed is DEBUG (not shown
        # at the access log's level), one that failed is a line like any other.
        quiet = status == 200 and scope["path"] in _PROBES
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            '%s "%s %s" %s %s %.3fs',
            peer,
            method,
            path,
            status,
            self.bytes,
            duration,
            extra={
                "client": peer,
                "method": method,
                "path": path,
                "status": status,
                "bytes": self.bytes,
                "duration": round(duration, 6),
            },
        )
