"""A fault-injecting TCP proxy for tests: faults below HTTP, between a server and its upstream.

The fake Anthropic server's `[[fake:...]]` directives fault the HTTP response from
inside the server. This proxy sits on the wire instead and does what a network does
(toxiproxy's toxics, which no package registry here ships): it forwards bytes both
ways and, from a trigger point in the upstream's answer on, injects one fault:

* `Fault.latency(s)`: every chunk, both ways, is held `s` seconds (in order);
* `Fault.reset(after)`: the client's socket is closed with `SO_LINGER` 0, which sends
  a TCP RST (a crashed middlebox, a killed upstream);
* `Fault.half_open(after)`: nothing more is forwarded either way, and both sockets stay
  open (a peer that vanished without a FIN: only a read timeout notices);
* `Fault.slow_close(after, delay)`: nothing more is forwarded, and the client's
  socket gets its FIN only `delay` seconds later.

`after` is where in the upstream's answer the fault starts: a number of bytes (0: before
its first byte), or a byte pattern — then the fault starts after the end of the
Server-Sent Event that holds the pattern's first occurrence (the next blank line,
`\\n\\n`), so the client has whole events up to there and nothing after.

The proxy runs its own event loop in a thread, so sync tests can drive it. It applies
its `fault` to every connection it accepts (or to the first `faulty` ones), counts the
connections, and records when each fault started.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str  # "latency", "reset", "half_open", "slow_close"
    after: int | bytes = 0
    seconds: float = 0.0  # latency per chunk, or the slow close's delay

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        return cls("latency", seconds=seconds)

    @classmethod
    def reset(cls, after: int | bytes) -> Fault:
        return cls("reset", after)

    @classmethod
    def half_open(cls, after: int | bytes) -> Fault:
        return cls("half_open", after)

    @classmethod
    def slow_close(cls, after: int | bytes, delay: float) -> Fault:
        return cls("slow_close", after, delay)


class _Trigger:
    """Finds the trigger point in the upstream's byte stream, across chunk boundaries."""

    def __init__(self, after: int | bytes) -> None:
        self.after = after
        self.seen = b""  # for a pattern: what came so far (answers here are small)
        self.count = 0

    def split(self, chunk: bytes) -> tuple[bytes, bool]:
        """The part of `chunk` to forward before the fault, and whether the fault starts."""
        if isinstance(self.after, int):
            room = self.after - self.count
            self.count += len(chunk)
            return (chunk[: max(room, 0)], room <= len(chunk))
        start = len(self.seen)
        self.seen += chunk
        found = self.seen.find(self.after)
        if found < 0:
            return chunk, False
        end = self.seen.find(b"\n\n", found + len(self.after))
        if end < 0:
            return chunk, False
        return chunk[: end + 2 - start], True


class FaultProxy:
    """`with FaultProxy(upstream_url, fault) as proxy:` listens on `proxy.url`."""

    def __init__(
        self, upstream_url: str, fault: Fault | None = None, *, faulty: int | None = None
    ) -> None:
        host, _, port = upstream_url.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port))
        self.fault = fault
        self.faulty = faulty  # how many connections get the fault (from the first); None: all
        self.connections = 0  # accepted so far
        self.faults_started: list[float] = []  # time.monotonic() of each fault
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.connections += 1
        fault = self.fault if self.faulty is None or self.connections <= self.faulty else None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, upstream_w}
        connection = _Connection()
        delay = fault.seconds if fault is not None and fault.kind == "latency" else 0.0
        up = asyncio.ensure_future(self._forward(client_r, upstream_w, delay, connection))
        down = asyncio.ensure_future(self._answer(upstream_r, client_w, fault, connection))
        try:
            # The client leaving (or a reset) ends the connection; the upstream leaving
            # only passes its FIN on, as a network would.
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy is closing (asyncio's stream server logs a cancelled handler)
        finally:
            up.cancel()
            down.cancel()
            for writer in (client_w, upstream_w):
                writer.transport.abort()
                self._writers.discard(writer)

    async def _forward(self, reader, writer, delay: float, connection: _Connection) -> None:
        """Client to upstream, until the client closes (after a fault: read and drop)."""
        with contextlib.suppress(OSError):
            async for chunk in _chunks(reader, delay):
                if not connection.faulted:
                    writer.write(chunk)
                    await writer.drain()

    async def _answer(self, upstream_r, client_w, fault: Fault | None, connection) -> None:
        """The upstream's answer to the client, with `fault` from its trigger on."""
        delay = fault.seconds if fault is not None and fault.kind == "latency" else 0.0
        trigger = _Trigger(fault.after) if fault is not None and delay == 0.0 else None
        hit = False
        with contextlib.suppress(OSError):
            async for chunk in _chunks(upstream_r, delay):
                if trigger is not None:
                    chunk, hit = trigger.split(chunk)
                if chunk:
                    client_w.write(chunk)
                    await client_w.drain()
                if hit:
                    break
            else:
                client_w.write_eof()  # the upstream closed first: pass its FIN on
                await asyncio.Event().wait()
        if not hit:
            return  # the client went away
        connection.faulted = True
        self.faults_started.append(time.monotonic())
        if fault.kind == "reset":
            # SO_LINGER with a zero timeout: closing sends RST, not FIN.
            client_w.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client_w.transport.abort()
        elif fault.kind == "half_open":
            await asyncio.Event().wait()  # forward nothing, close nothing
        elif fault.kind == "slow_close":
            await asyncio.sleep(fault.seconds)
            client_w.write_eof()
            await asyncio.Event().wait()
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")


@dataclass
class _Connection:
    faulted: bool = False


async def _chunks(reader: asyncio.StreamReader, delay: float):
    """What `reader` receives, chunk by chunk, each `delay` seconds after it arrived:
    in order and pipelined (latency, not a bandwidth limit)."""
    if not delay:
        while chunk := await reader.read(_CHUNK):
            yield chunk
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                queue.put_nowait((loop.time() + delay, chunk))
        finally:
            queue.put_nowait((loop.time() + delay, b""))  # the end, or an error

    receiving = asyncio.ensure_future(receive())
    try:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                return
            yield chunk
    finally:
        receiving.cancel()
