"""The load client: C concurrent SSE streams over aiohttp, with real SSE parsing.

Run by `bench.run` as `python -m bench.loadgen SPEC.json OUT.json`, pinned to the
same core as the fake upstream. Modes (`spec["mode"]`):

``load``       C workers in a closed loop until the measurement window ends.
               chatsite: mint a stream token, open the conversation stream, wait for
               its `retry:` block (the server has subscribed), then repeatedly POST a
               message and read until its `message_end`; a send refused with 503 is
               counted (`refused`, not an error) and tried again after its
               Retry-After (at most 2 s). Sends and stream tokens go to `base_url`,
               streams to `stream_base_url` (another process of the same site, if
               given). Peers: GET /stream, read until `message_end`, repeat.
``idle``       open N streams that receive heartbeats only and hold them.
``calibrate``  sequential streaming requests straight to the fake upstream: its own
               time to first token (the baseline that TTFT overhead subtracts).
``soak``       `bench.soak`'s churn load (stops, reconnects, regenerations), in
               `bench/soak_client.py`.

Timing: every delta of the fake upstream started with `--stamp` is "<seq>@<send time> "
(time.time() when the upstream wrote it). A delta the client receives may carry
several stamps (a relay may coalesce), and relay latency is computed for each stamp:
receive time (time.time() when the chunk came off the socket) minus the stamp.
Only deltas received inside the measurement window count toward latency and
tokens/s; only messages sent inside it count toward TTFT. CPU time of every process
group (`proc_groups`) and, with `redis_url`, Redis's `INFO commandstats` are read at
the window's edges.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import re
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import psutil

from bench.sse import SSEParser
from bench.systems import redis_commandstats, redis_per_token, redis_stats_client

STAMP_RE = re.compile(r"(\d+)@(\d+\.\d+)")
NO_PID_DATA = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
MAX_RETRY_AFTER = 2.0  # s: the longest a refused send waits before it is tried again


# --------------------------------------------------------------------- processes


@dataclass
class ProcGroup:
    """Processes whose CPU time and RSS are summed: pids (and their children) and
    any process whose command line contains one of `match` as whole words (e.g.
    PostgreSQL backends of the bench database, which come and go)."""

    name: str
    pids: list[int] = field(default_factory=list)
    match: list[str] = field(default_factory=list)
    children: bool = True

    def __post_init__(self) -> None:
        self._match = [re.compile(rf"(?<!\S){re.escape(m)}(?!\S)") for m in self.match]

    def processes(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                procs[pid] = proc
                if self.children:
                    for child in proc.children(recursive=True):
                        procs[child.pid] = child
            except NO_PID_DATA:
                pass
        if self.match:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or ())
                if any(m.search(cmd) for m in self._match):
                    procs[proc.pid] = proc
        return list(procs.values())

    def sample(self) -> dict:
        """CPU seconds (user+system, reaped children included), RSS bytes, threads and
        open file descriptors, summed over the group, and the pids sampled."""
        cpu = rss = threads = fds = 0.0
        pids = []
        for proc in self.processes():
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    cpu += t.user + t.system + t.children_user + t.children_system
                    pids.append(proc.pid)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    fds += proc.num_fds()  # another user's process: AccessDenied
            except NO_PID_DATA:
                pass
        return {"cpu": cpu, "rss": rss, "threads": threads, "fds": fds, "pids": pids}


def proc_groups(spec: dict) -> dict[str, ProcGroup]:
    """ "sut" (the system under test, all its processes), "sut_<part>" (each process of
    a multi-process system), "client", "upstream", "backing_<service>" (PostgreSQL,
    Redis: services the system uses, not counted in its CPU)."""
    groups = {"sut": ProcGroup("sut", **spec.get("sut_procs", {}))}
    for part, procs in (spec.get("sut_parts") or {}).items():
        groups[f"sut_{part}"] = ProcGroup(f"sut_{part}", **procs)
    groups["client"] = ProcGroup("client", pids=[os.getpid()], children=False)
    if spec.get("upstream_pid"):
        groups["upstream"] = ProcGroup("upstream", pids=[spec["upstream_pid"]])
    for service, procs in (spec.get("backing_procs") or {}).items():
        groups[f"backing_{service}"] = ProcGroup(f"backing_{service}", **procs)
    return groups


def sample_all(groups: dict[str, ProcGroup]) -> dict[str, dict]:
    return {name: group.sample() for name, group in groups.items()}


# ----------------------------------------------------------------------- records


class Answer:
    """One answer as the client saw it."""

    __slots__ = ("done", "ended", "seen", "status", "t_first", "t_sent", "tokens")

    def __init__(self, t_sent: float, expected: int) -> None:
        self.t_sent = t_sent
        self.t_first: float | None = None
        self.seen = bytearray(expected + 1)
        self.tokens = 0
        self.status: str | None = None
        self.ended = False
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()


class Stats:
    """Everything the workers record; the window is set once the ramp is done."""

    def __init__(self, expected_tokens: int, upstream_ttft: float) -> None:
        self.expected = expected_tokens
        self.upstream_ttft = upstream_ttft
        self.window = (float("inf"), float("inf"))
        self.latency = array.array("d")  # seconds, deltas received in the window
        self.ttft = array.array("d")  # seconds, answers sent in the window
        self.open_times = array.array("d")  # seconds from launch to stream open
        self.answer_times = array.array("d")  # seconds from first delta to message_end
        self.tokens_window = 0
        self.tokens_total = 0
        self.duplicate_tokens = 0
        self.answers_sent = 0  # sends answered, refusals (503) not included
        self.answers_accepted = 0  # chatsite: the POST got 201
        self.refused = 0  # chatsite: sends answered 503 (tried again after Retry-After)
        self.refused_in_window = 0
        self.answers_ok = 0
        self.answers_in_window = 0
        self.missing_tokens = 0
        self.opened = 0
        self.open_failed = 0
        self.open_streams = 0  # gauge
        self.heartbeats = 0
        self.streams_with_heartbeat = 0  # idle mode: held streams that saw ≥ 1 `: ping`
        self.errors: Counter[str] = Counter()

    def delta(self, answer: Answer | None, text: str, t_recv: float) -> None:
        if answer is None:
            self.errors["delta_without_answer"] += 1
            return
        if answer.t_first is None:
            answer.t_first = t_recv
        start, end = self.window
        in_window = start <= t_recv < end
        for m in STAMP_RE.finditer(text):
            seq = int(m.group(1))
            if 0 < seq < len(answer.seen):
                if answer.seen[seq]:
                    self.duplicate_tokens += 1
                    continue
                answer.seen[seq] = 1
            answer.tokens += 1
            self.tokens_total += 1
            if in_window:
                self.tokens_window += 1
                self.latency.append(t_recv - float(m.group(2)))

    def end(self, answer: Answer, status: str, t_recv: float) -> None:
        answer.status = status
        answer.ended = True
        if answer.t_first is not None:
            self.answer_times.append(t_recv - answer.t_first)
        missing = max(0, self.expected - answer.tokens)
        self.missing_tokens += missing
        if status == "complete" and not missing:
            self.answers_ok += 1
        elif status != "complete":
            self.errors[f"answer_{status}"] += 1
        if missing:
            self.errors["answers_missing_tokens"] += 1
        start, end = self.window
        if start <= answer.t_sent < end:
            self.answers_in_window += 1
            if answer.t_first is not None:
                self.ttft.append(answer.t_first - answer.t_sent - self.upstream_ttft)
        if not answer.done.done():
            answer.done.set_result(None)


# ------------------------------------------------------------------------ workers


class Run:
    def __init__(self, spec: dict, *, offset: int = 0, max_answers: float = float("inf")) -> None:
        self.spec = spec
        self.offset = offset  # worker i uses conversation / URL i + offset
        self.max_answers = max_answers
        self.base = spec["base_url"]
        self.stream_base = spec.get("stream_base_url") or self.base
        self.stats = Stats(spec.get("expected_tokens", 50), spec.get("upstream_ttft", 0.0))
        self.stop_at = float("inf")  # no new answers after this (time.time())
        self.message_timeout = spec.get("message_timeout", 60.0)
        self.open_slots = asyncio.Semaphore(spec.get("max_pending_opens", 32))
        self.session: aiohttp.ClientSession | None = None
        self.concurrency = spec["concurrency"]
        self.opened_all = asyncio.Event()
        self.hold = asyncio.Event()  # idle mode: set when streams may close

    def _opened(self, ok: bool, t_launch: float) -> None:
        if ok:
            self.stats.opened += 1
            self.stats.open_streams += 1
            self.stats.open_times.append(time.time() - t_launch)
        else:
            self.stats.open_failed += 1
        if self.stats.opened + self.stats.open_failed >= self.concurrency:
            self.opened_all.set()

    def error(self, kind: str) -> None:
        self.stats.errors[kind] += 1

    # --- chatsite: one stream per worker, answers in a closed loop -----------------

    async def chatsite_worker(self, i: int) -> None:
        s = self.session
        assert s is not None
        i += self.offset
        user = self.spec["users"][i % len(self.spec["users"])]
        conv = user["conversations"][(i // len(self.spec["users"])) % len(user["conversations"])]
        auth = {"Authorization": f"Bearer {user['access']}"}
        t_launch = time.time()
        opened = False
        resp = None
        reader: asyncio.Task | None = None
        state: dict[str, Any] = {"answer": None, "subscribed": asyncio.Event(), "closed": False}
        try:
            async with self.open_slots:
                try:
                    url = await self._stream_url(conv, auth)
                    if url is None:
                        return
                    resp = await s.get(url, headers={"Accept": "text/event-stream"})
                    if resp.status != 200:
                        self.error(f"stream_http_{resp.status}")
                        return
                    reader = asyncio.create_task(self._read_chatsite(resp, state))
                    await asyncio.wait_for(state["subscribed"].wait(), self.message_timeout)
                    opened = True
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.error(f"stream_open_{type(exc).__name__}")
                    return
                finally:
                    self._opened(opened, t_launch)
            messages_url = f"{self.base}/api/v1/conversations/{conv}/messages/"
            sent = 0
            while time.time() < self.stop_at and not state["closed"] and sent < self.max_answers:
                answer = Answer(time.time(), self.stats.expected)
                state["answer"] = answer
                try:
                    async with s.post(messages_url, json={"content": "bench"}, headers=auth) as r:
                        await r.read()
                        status = r.status
                        retry_after = r.headers.get("Retry-After")
                except (aiohttp.ClientError, OSError) as exc:
                    self.error(f"send_{type(exc).__name__}")
                    break
                if status == 503:  # at capacity: a refusal, not an error; try again
                    self.stats.refused += 1
                    start, end = self.stats.window
                    if start <= answer.t_sent < end:
                        self.stats.refused_in_window += 1
                    await asyncio.sleep(_retry_after(retry_after))
                    continue
                sent += 1
                self.stats.answers_sent += 1
                if status != 201:
                    self.error(f"send_http_{status}")
                    await asyncio.sleep(0.5)
                    continue
                self.stats.answers_accepted += 1
                try:
                    await asyncio.wait_for(asyncio.shield(answer.done), self.message_timeout)
                except TimeoutError:
                    self.error("answer_timeout")
                    break
                if not answer.ended:  # the stream closed mid-answer
                    break
        finally:
            if opened:
                self.stats.open_streams -= 1
            if reader is not None:
                reader.cancel()
            if resp is not None:
                resp.close()

    async def _stream_url(self, conv: str, auth: dict) -> str | None:
        """A stream token from `base_url`; the stream's URL on `stream_base_url`."""
        assert self.session is not None
        url = f"{self.base}/api/v1/conversations/{conv}/stream-token/"
        async with self.session.post(url, headers=auth) as r:
            body = await r.read()
            if r.status != 201:
                self.error(f"stream_token_http_{r.status}")
                return None
        # The server returns a path (or a URL on its own origin): open it on the
        # stream base instead.
        parts = urllib.parse.urlsplit(json.loads(body)["stream_url"])
        return self.stream_base + urllib.parse.urlunsplit(("", "", *parts[2:]))

    async def _read_chatsite(self, resp: aiohttp.ClientResponse, state: dict) -> None:
        parser = SSEParser()
        stats = self.stats
        try:
            async for chunk in resp.content.iter_any():
                t = time.time()
                for ev in parser.feed(chunk):
                    answer = state["answer"]
                    if ev.type == "delta":
                        stats.delta(answer, json.loads(ev.data)["text"], t)
                    elif ev.type == "message_end":
                        if answer is not None and not answer.ended:
                            stats.end(answer, json.loads(ev.data)["status"], t)
                    elif ev.type == "error":
                        self.error("sse_error_event")
                if parser.retry is not None and not state["subscribed"].is_set():
                    state["subscribed"].set()
            self.error("stream_eof")
        except (aiohttp.ClientError, OSError) as exc:
            self.error(f"stream_{type(exc).__name__}")
        finally:
            stats.heartbeats += parser.comments
            state["closed"] = True
            answer = state["answer"]
            if answer is not None and not answer.done.done():
                answer.done.set_result(None)

    # --- peers: one GET per answer -------------------------------------------------

    async def peer_worker(self, i: int) -> None:
        s = self.session
        assert s is not None
        url = self.base + self.spec.get("stream_path", "/stream")
        first = True
        t_launch = time.time()
        sent = 0
        while time.time() < self.stop_at and sent < self.max_answers:
            sent += 1
            answer = Answer(time.time(), self.stats.expected)
            parser = SSEParser()
            ok = False
            try:
                slot = self.open_slots if first else _NULL_SLOT
                async with asyncio.timeout(self.message_timeout):
                    async with slot:
                        resp = await s.get(url, headers={"Accept": "text/event-stream"})
                    async with resp:
                        self.stats.answers_sent += 1
                        if resp.status != 200:
                            self.error(f"stream_http_{resp.status}")
                            if first:
                                self._opened(False, t_launch)
                                return
                            await asyncio.sleep(0.5)
                            continue
                        if first:
                            self._opened(True, t_launch)
                            first = False
                        async for chunk in resp.content.iter_any():
                            t = time.time()
                            for ev in parser.feed(chunk):
                                if ev.type == "delta":
                                    self.stats.delta(answer, json.loads(ev.data)["text"], t)
                                elif ev.type == "message_end":
                                    self.stats.end(answer, "complete", t)
                            if answer.ended:
                                break
                        ok = answer.ended
                        if not ok:
                            self.error("stream_eof")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                kind = "answer_timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                self.error(kind if kind == "answer_timeout" else f"stream_{kind}")
                if first:
                    self._opened(False, t_launch)
                    return
            if not ok:
                break
        if not first:
            self.stats.open_streams -= 1

    # --- idle streams: heartbeats only -----------------------------------------------

    async def idle_worker(self, i: int) -> None:
        s = self.session
        assert s is not None
        if self.spec["kind"] == "chatsite":
            path = self.spec["stream_urls"][(i + self.offset) % len(self.spec["stream_urls"])]
        else:
            path = self.spec.get("idle_path", "/idle")
        t_launch = time.time()
        opened = False
        parser = SSEParser()
        resp = None
        try:
            async with self.open_slots:
                try:
                    url = self.stream_base + path
                    resp = await s.get(url, headers={"Accept": "text/event-stream"})
                    if resp.status != 200:
                        self.error(f"stream_http_{resp.status}")
                        return
                    async with asyncio.timeout(self.message_timeout):
                        while parser.retry is None:
                            chunk = await resp.content.readany()
                            if not chunk:
                                raise aiohttp.ServerDisconnectedError()
                            parser.feed(chunk)
                    opened = True
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.error(f"stream_open_{type(exc).__name__}")
                    return
                finally:
                    self._opened(opened, t_launch)
            hold = asyncio.create_task(self.hold.wait())
            while True:
                read = asyncio.create_task(resp.content.readany())
                await asyncio.wait({read, hold}, return_when=asyncio.FIRST_COMPLETED)
                if hold.done():
                    read.cancel()
                    break
                chunk = read.result()
                if not chunk:
                    self.error("idle_stream_eof")
                    break
                parser.feed(chunk)
        except (aiohttp.ClientError, OSError) as exc:
            self.error(f"idle_stream_{type(exc).__name__}")
        finally:
            self.stats.heartbeats += parser.comments
            if opened:
                self.stats.open_streams -= 1
                if parser.comments:
                    self.stats.streams_with_heartbeat += 1
            if resp is not None:
                resp.close()


def _retry_after(header: str | None) -> float:
    """Seconds to wait after a 503: its Retry-After (delta-seconds), at most
    MAX_RETRY_AFTER; 0.5 s if it has none (or an HTTP date)."""
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(header or "")))
    except ValueError:
        return 0.5


class _NullSlot:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL_SLOT = _NullSlot()


# ---------------------------------------------------------------------- phases


async def _monitor(groups: dict[str, ProcGroup], out: list, stop: asyncio.Event) -> None:
    """RSS of the system under test every 0.5 s, and the client's event-loop lag."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.05)
        lag = loop.time() - t - 0.05
        out.append(("lag", time.time(), lag))
        if len(out) % 10 == 0:
            sut = groups["sut"].sample()
            out.append(("rss", time.time(), sut["rss"]))
            out.append(("threads", time.time(), sut["threads"]))


def _pct(values, qs=(50, 90, 99)) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{q}": None for q in qs} | {"max": None, "mean": None, "n": 0}
    a = np.frombuffer(values, dtype="d") if isinstance(values, array.array) else np.asarray(values)
    ms = a * 1000.0
    res = {f"p{q}": float(np.percentile(ms, q)) for q in qs}
    return res | {"max": float(ms.max()), "mean": float(ms.mean()), "n": len(ms)}


async def run_streams(spec: dict) -> dict:
    """Load or idle mode. Returns the summary (see bench/README.md for each field)."""
    run = Run(spec)
    stats = run.stats
    groups = proc_groups(spec)
    C = spec["concurrency"]
    per_tick = max(1, spec.get("ramp_per_10ms", 10))
    mode = spec["mode"]
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, enable_cleanup_closed=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    samples: list = []
    stop_monitor = asyncio.Event()
    result: dict[str, Any] = {"mode": mode, "kind": spec["kind"], "concurrency": C}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        run.session = session
        if spec["kind"] == "chatsite" and spec.get("login"):
            result["login_status"] = await _login_check(session, spec)
        result["warmup"] = await _warm_up(spec, session)
        await asyncio.sleep(1.0)
        idle = sample_all(groups)
        monitor = asyncio.create_task(_monitor(groups, samples, stop_monitor))
        if mode == "load":
            worker = run.chatsite_worker if spec["kind"] == "chatsite" else run.peer_worker
        else:
            worker = run.idle_worker
        t_ramp = time.time()
        tasks = []
        for i in range(C):
            tasks.append(asyncio.create_task(worker(i)))
            if (i + 1) % per_tick == 0:
                await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(run.opened_all.wait(), spec.get("ramp_timeout", 60.0))
        except TimeoutError:
            result["ramp_timed_out"] = True
        result["ramp_seconds"] = time.time() - t_ramp
        await asyncio.sleep(spec.get("settle", 2.0))

        # The measurement window.
        duration = spec.get("duration", 10.0)
        rstats = redis_stats_client(spec["redis_url"]) if spec.get("redis_url") else None
        if rstats is not None:
            redis_commandstats(rstats)  # connect now, not inside the window
        w0 = time.time()
        stats.window = (w0, w0 + duration)
        run.stop_at = w0 + duration
        redis_before = redis_commandstats(rstats) if rstats is not None else None
        before = sample_all(groups)
        open_at_start = stats.open_streams
        await asyncio.sleep(duration)
        after = sample_all(groups)
        redis_after = redis_commandstats(rstats) if rstats is not None else None
        open_at_end = stats.open_streams
        w1 = time.time()
        run.hold.set()
        if rstats is not None:
            rstats.close()

        # Let answers in flight finish (bounded), then close everything.
        done, pending = await asyncio.wait(tasks, timeout=run.message_timeout + 5)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            stats.errors["workers_cancelled_at_end"] += len(pending)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                stats.errors[f"worker_crash_{type(t.exception()).__name__}"] += 1
        stop_monitor.set()
        await monitor

    window_rss = [v for k, t, v in samples if k == "rss" and w0 <= t <= w1]
    threads = [v for k, t, v in samples if k == "threads"]
    lags = [v for k, t, v in samples if k == "lag" and w0 <= t <= w1]
    win = w1 - w0
    tokens = stats.tokens_window
    cpu = {name: after[name]["cpu"] - before[name]["cpu"] for name in after}
    rss_open = float(np.mean(window_rss)) if window_rss else after["sut"]["rss"]
    held = (open_at_start + open_at_end) / 2
    offered = C * spec.get("tokens_per_second", 50.0)  # every stream always answering
    result.update(
        {
            "window_seconds": win,
            "opened": stats.opened,
            "open_failed": stats.open_failed,
            "open_streams_window": {"start": open_at_start, "end": open_at_end},
            "open_ms": _pct(stats.open_times),
            "latency_ms": _pct(stats.latency),
            "ttft_overhead_ms": _pct(stats.ttft),
            "answer_streaming_ms": _pct(stats.answer_times),
            "upstream_ttft_ms": stats.upstream_ttft * 1000,
            "tokens_window": tokens,
            "tokens_per_second": tokens / win,
            "tokens_total": stats.tokens_total,
            "offered_tokens_per_second": offered if mode == "load" else None,
            "delivered_fraction": tokens / win / offered if mode == "load" and offered else None,
            "answers_sent": stats.answers_sent,
            "answers_accepted": stats.answers_accepted,
            "refused": stats.refused,
            "refused_in_window": stats.refused_in_window,
            "answers_ok": stats.answers_ok,
            "answers_in_window": stats.answers_in_window,
            "missing_tokens": stats.missing_tokens,
            "duplicate_tokens": stats.duplicate_tokens,
            "heartbeats": stats.heartbeats,
            "streams_with_heartbeat": stats.streams_with_heartbeat,
            "errors": dict(stats.errors),
            "error_count": sum(stats.errors.values()),
            "cpu_seconds": cpu,
            "sut_cpu_per_1k_tokens": (cpu["sut"] / tokens * 1000) if tokens else None,
            "sut_cpu_utilisation": cpu["sut"] / win,
            "core1_utilisation": (cpu["client"] + cpu.get("upstream", 0.0)) / win,
            "rss_idle_mb": idle["sut"]["rss"] / 2**20,
            "rss_open_mb": rss_open / 2**20,
            "rss_per_stream_kb": ((rss_open - idle["sut"]["rss"]) / held / 1024) if held else None,
            "sut_threads": {"idle": idle["sut"]["threads"], "max": max(threads, default=None)},
            "sut_fds": {"idle": idle["sut"]["fds"], "window_end": after["sut"]["fds"]},
            "client_loop_lag_ms": _pct(lags),
        }
    )
    parts = [name.removeprefix("sut_") for name in cpu if name.startswith("sut_")]
    if parts:
        result["sut_cpu_by_process"] = {
            part: {
                "cpu_seconds": cpu[f"sut_{part}"],
                "per_1k_tokens": cpu[f"sut_{part}"] / tokens * 1000 if tokens else None,
                "utilisation": cpu[f"sut_{part}"] / win,
            }
            for part in parts
        }
    services = [name.removeprefix("backing_") for name in cpu if name.startswith("backing_")]
    for service in services:
        key = f"backing_{service}"
        result[f"{service}_cpu_per_1k_tokens"] = cpu[key] / tokens * 1000 if tokens else None
        result[f"{service}_cpu_utilisation"] = cpu[key] / win
        # A process that exited inside the window took its CPU time with it (not
        # counted); a process that started inside it is counted from zero.
        pids0, pids1 = set(before[key]["pids"]), set(after[key]["pids"])
        result.setdefault("backing_pids", {})[service] = {
            "start": len(pids0),
            "end": len(pids1),
            "exited": len(pids0 - pids1),
        }
    if services and tokens:
        backing = sum(cpu[f"backing_{s}"] for s in services)
        result["backing_cpu_per_1k_tokens"] = backing / tokens * 1000
    if spec.get("redis_url"):
        result["redis"] = redis_per_token(redis_before, redis_after, tokens) | {
            "bracket": "measurement window"
        }
    raw = spec.get("raw_prefix")
    if raw:
        np.savez_compressed(
            raw,
            latency=np.frombuffer(stats.latency, dtype="d"),
            ttft=np.frombuffer(stats.ttft, dtype="d"),
            open=np.frombuffer(stats.open_times, dtype="d"),
        )
    return result


async def _warm_up(spec: dict, session: aiohttp.ClientSession) -> dict:
    """A few streams before the idle baseline, so lazy imports and pools are paid for.

    They use the conversations / URLs after the first C (prepared for this)."""
    n = spec.get("warmup", 0)
    if not n:
        return {}
    run = Run({**spec, "concurrency": n}, offset=spec["concurrency"], max_answers=1)
    run.session = session
    if spec["mode"] == "load":
        worker = run.chatsite_worker if spec["kind"] == "chatsite" else run.peer_worker
    else:
        worker = run.idle_worker
        run.hold.set()
    tasks = [asyncio.create_task(worker(i)) for i in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=run.message_timeout)
    for t in pending:
        t.cancel()
    return {
        "streams": n,
        "opened": run.stats.opened,
        "answers_sent": run.stats.answers_sent,
        "answers_accepted": run.stats.answers_accepted,
        "refused": run.stats.refused,
        "tokens_total": run.stats.tokens_total,
        "errors": dict(run.stats.errors),
    }


async def _login_check(session: aiohttp.ClientSession, spec: dict) -> int:
    """One real login (`POST /api/v1/auth/token/`), as the chat flow starts with."""
    body = {"username": spec["login"]["username"], "password": spec["login"]["password"]}
    async with session.post(f"{spec['base_url']}/api/v1/auth/token/", json=body) as r:
        await r.read()
        return r.status


async def calibrate(spec: dict) -> dict:
    """The fake upstream's own time to first token, measured straight at it."""
    body = {
        "model": "bench",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": "calibrate"}],
    }
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
    firsts = []
    async with aiohttp.ClientSession() as session:
        for _ in range(spec.get("requests", 20)):
            t0 = time.time()
            first = None
            parser = SSEParser()
            async with session.post(
                spec["upstream_url"] + "/v1/messages", json=body, headers=headers
            ) as r:
                async for chunk in r.content.iter_any():
                    for ev in parser.feed(chunk):
                        if ev.type == "content_block_delta" and first is None:
                            first = time.time()
                            break
                    if first is not None:
                        break
            if first is not None:
                firsts.append(first - t0)
    return {"mode": "calibrate", "upstream_ttft_ms": _pct(firsts)}


def main(argv: list[str]) -> None:
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        from uvloop import run as run_loop  # the client's own overhead, kept small
    except ImportError:
        run_loop = asyncio.run
    if spec["mode"] == "soak":  # bench.soak's client: minutes of churn (bench/soak_client.py)
        from bench.soak_client import run_soak

        coro = run_soak(spec)
    else:
        coro = calibrate(spec) if spec["mode"] == "calibrate" else run_streams(spec)
    result = run_loop(coro)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
