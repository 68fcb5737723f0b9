"""How our servers treat connections, whichever one runs (daphne or uvicorn).

ASGI gives an application no say over its connection, and neither server bounds
connections the way long-lived event streams need, so `chatsite.server` and
`chatsite.uvicorn_server` both apply what is here:

* **Request headers** must be complete within `CHAT_HTTP_HEADER_TIMEOUT_SECONDS` of
  the connection opening or of the request's first byte; a client that trickles them
  (slowloris) or sends nothing is disconnected. An idle keep-alive connection is
  closed after `CHAT_HTTP_KEEPALIVE_SECONDS`.
* **Event streams** (`text/event-stream` responses) are written for as long as the
  client takes them, and dropped — the connection aborted, one log line with the
  reason — once it has not for one heartbeat interval (`CHAT_SSE_HEARTBEAT_SECONDS`),
  so every client that is too slow, stopped reading or is gone is let go within two
  heartbeats:

  - *the server's write buffer stays full for a heartbeat*: the client reads slower
    than the answer arrives (a 1 KB/s link). Both servers' `send` waits while that
    buffer is full (flow control; daphne's did not wait, and Twisted buffered without
    limit), so what a stream holds is bounded: 64 KiB in the server,
    `EVENT_STREAM_SEND_BUFFER_BYTES` in the kernel (which Linux doubles), and the
    live events that reach the stream's queue during the one heartbeat its write
    may wait.
  - *the client takes nothing for a heartbeat*: nothing is acknowledged, or its
    receive window stays shut. A client that vanished without closing (a pulled
    cable, a phone that lost its network) takes heartbeats into the kernel's buffer
    for minutes, and TCP retries for a quarter of an hour; `TCP_USER_TIMEOUT` has
    the kernel give up after a heartbeat instead.

The browser's EventSource reconnects with `Last-Event-ID` and resumes from what it
really received. Runs do not depend on their viewers, so the answer is saved whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import sys
import termios
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chat.conf import chat_settings
from chatsite.logging import redact

logger = logging.getLogger(__name__)

# The kernel's send buffer of an event stream. Left alone, Linux grows it to 4 MB on
# loopback (behind a local proxy), where a stalled client's backlog would hide for
# minutes. A stream needs a few KB/s; 64 KiB holds seconds of a fast answer.
EVENT_STREAM_SEND_BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    keepalive: float
    stream_send_timeout: float

    @classmethod
    def from_settings(cls) -> ConnectionLimits:
        return cls(
            header_timeout=chat_settings.HTTP_HEADER_TIMEOUT_SECONDS,
            keepalive=chat_settings.HTTP_KEEPALIVE_SECONDS,
            stream_send_timeout=chat_settings.SSE_HEARTBEAT_SECONDS,
        )


def is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the headers of an ASGI `http.response.start` begin an event stream."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/event-stream")
    return False


def request_line(method: str, path: str, query_string: bytes = b"") -> str:
    """`GET /path?query` for a log line, stream tokens redacted."""
    query = query_string.decode("latin-1")
    return redact(f"{method} {path}{'?' + query if query else ''}")


class EventStream:
    """One event stream's connection: limit its kernel buffer, watch its writes, drop it.

    A server makes one when a response turns out to be an event stream, and tells it
    when its write buffer fills (`paused`) and drains (`resumed`), and when the
    response (`finished`) or the connection (`closed`) ends. Every half heartbeat it
    looks at the socket: whether the kernel holds data the client has not
    acknowledged, and has not for a whole look. That is how a connection the kernel
    gave up on is told, at its end, from one the client closed, on a server that
    reports every socket error alike (Twisted); uvicorn passes on the error itself.
    """

    def __init__(
        self,
        *,
        sock: socket.socket | None,
        timeout: float,
        abort: Callable[[], None],
        client: str,
        request: str,
    ) -> None:
        self.timeout = timeout
        self.client = client
        self.request = request
        self.dropped = False
        self._sock = sock
        self._abort = abort
        self._expiry: asyncio.TimerHandle | None = None
        self._look: asyncio.TimerHandle | None = None
        self._acknowledged = -1
        self.stalled = False  # at the last look, unacknowledged data had waited a whole look
        if sock is not None:
            _limit_socket(sock, timeout)
            self._look_at_socket()

    def paused(self) -> None:
        if self._expiry is None and not self.dropped:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.timeout, self._writes_waited_too_long)

    def resumed(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def finished(self) -> None:
        """The response ended; the connection may carry other requests."""
        self.resumed()
        if self._look is not None:
            self._look.cancel()
            self._look = None

    def closed(self, exc: BaseException | None = None) -> None:
        """The connection ended, with `exc`, the socket's error, if the server passes it on."""
        self.finished()
        if self.dropped:
            return
        if isinstance(exc, TimeoutError) or (exc is None and self.stalled):
            self._log_drop(f"the client took nothing for {self.timeout:g} s (gone, or not reading)")

    def _look_at_socket(self) -> None:
        acknowledged, waiting = _acknowledgements(self._sock)
        if acknowledged is None:
            return  # not a TCP socket on Linux: nothing to look at
        self.stalled = waiting > 0 and acknowledged == self._acknowledged
        self._acknowledged = acknowledged
        loop = asyncio.get_running_loop()
        self._look = loop.call_later(self.timeout / 2, self._look_at_socket)

    def _writes_waited_too_long(self) -> None:
        self._expiry = None
        self._log_drop(
            f"its writes waited {self.timeout:g} s (the client reads too slowly, or not at all)"
        )
        self._abort()

    def _log_drop(self, reason: str) -> None:
        self.dropped = True
        logger.warning("event stream dropped: %s %s: %s", self.client, self.request, reason)


def _limit_socket(sock: socket.socket, timeout: float) -> None:
    # A Unix socket has no TCP options, a TLS transport may hand over no socket:
    # then the write-buffer watch alone applies.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENT_STREAM_SEND_BUFFER_BYTES)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))


# struct tcp_info (linux/tcp.h, fields are only ever appended): u64 tcpi_bytes_acked.
_TCP_INFO_BYTES_ACKED = 120


def _acknowledgements(sock: socket.socket | None) -> tuple[int | None, int]:
    """(bytes the client has acknowledged so far, bytes the kernel holds for it that it
    has not), or (None, 0) where the kernel does not tell (not Linux, not TCP, closed)."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None, 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES_ACKED + 8)
        waiting = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ
    except (OSError, ValueError, AttributeError):
        return None, 0
    if len(info) < _TCP_INFO_BYTES_ACKED + 8:
        return None, 0
    (acknowledged,) = struct.unpack_from("Q", info, _TCP_INFO_BYTES_ACKED)
    return acknowledged, int.from_bytes(waiting, sys.byteorder)
