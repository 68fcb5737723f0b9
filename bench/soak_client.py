"""The soak's load client: C streams for many minutes, with the churn real users make.

Run by `bench.soak` through `bench.run.loadgen` (`python -m bench.loadgen SPEC OUT` with
`spec["mode"] == "soak"`), on the harness core. Each of C workers is one user with one
open stream on one conversation, and until the load ends it repeats:

* think (a random pause, `think` s on average), then send a message; a send refused
  with 503 is counted (`refused`, not an error) and sent again after its Retry-After;
* with probability `stop_fraction`, stop the answer after a random number of its tokens
  (`POST /api/v1/messages/{id}/cancel/`): it must end `cancelled`, with exactly the text
  the cancel response returned;
* else with probability `reconnect_fraction`, drop the stream after a random number of
  the answer's tokens, wait up to `reconnect_pause` s and reopen it with `Last-Event-ID`
  (as EventSource does): the answer must still arrive whole (`check_text`);
* else read the answer to its end;
* regenerate a finished answer (`POST /api/v1/messages/{id}/regenerate/`) with
  probability `regenerate_fraction`, and read the new answer to its end;
* after `answers_per_conversation` answers, start a new conversation (a new stream on
  it, the old one closed), as a user starts a new chat: histories, and with them the
  cost of a send, stay the same from the first minute to the last.

Every answer's text is checked: the fake upstream (`--stamp`) sends deltas
`"<seq>@<time> "`, so a whole answer is stamps 1…N, each once, in order, and nothing
else; a stopped one is stamps 1…k. Whatever goes wrong is counted by kind; a worker whose
stream ends resumes it (`Last-Event-ID`) and goes on, so one error does not end a
worker's soak. Every `sample_every` s a line of progress (cumulative counts; the
interval's tokens and relay latency, live deltas only) is appended to `progress_path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
import urllib.parse
from collections import Counter, deque
from typing import Any

import aiohttp

from bench.sse import Event, SSEParser

STAMP = re.compile(r"(\d+)@(\d+\.\d{6}) ")
MAX_RETRY_AFTER = 2.0  # s, as bench.loadgen: the longest a refused send waits


def check_text(text: str, expected: int | None) -> str | None:
    """None if `text` is exactly the stamps 1…n in order and nothing else (n ==
    `expected` unless it is None: a stopped answer), else what is wrong with it:
    `garbage` (text between or after stamps: a cut or doubled fragment), `duplicate`,
    `gap`, `short` (fewer than `expected`) or `long`."""
    seq = pos = 0
    for m in STAMP.finditer(text):
        if m.start() != pos:
            return "garbage"
        n = int(m.group(1))
        if n <= seq:
            return "duplicate"
        if n != seq + 1:
            return "gap"
        seq, pos = n, m.end()
    if pos != len(text):
        return "garbage"
    if expected is not None and seq != expected:
        return "short" if seq < expected else "long"
    return None


def percentile(ordered: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) of an ascending list, nearest rank; None if empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _retry_after(header: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(header or "")))
    except ValueError:
        return 0.5


class Answer:
    """One answer as a worker's streams delivered it."""

    __slots__ = ("end", "length", "live", "parts", "reached", "status", "stored", "tokens", "want")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.parts: list[str] = []
        self.length = 0  # characters received
        self.tokens = 0  # stamps received
        self.status: str | None = None
        self.end: asyncio.Future = loop.create_future()  # set at its message_end
        self.want = 0  # a worker waits for this many tokens (stop or drop mid-answer)
        self.reached: asyncio.Future = loop.create_future()
        self.live = True  # False once resumed: catch-up text is not relay latency
        self.stored: str | None = None  # the text the cancel response returned

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def restart(self) -> None:
        """It is sent again in full (after a `reset`): drop what was received."""
        self.parts.clear()
        self.length = self.tokens = 0


class Soak:
    """What all workers share: the session, the counts, the clock."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.base = spec["base_url"]
        self.stream_base = spec.get("stream_base_url") or self.base
        self.expected = spec["expected_tokens"]
        self.message_timeout = spec.get("message_timeout", 60.0)
        self.session: aiohttp.ClientSession | None = None
        self.open_slots = asyncio.Semaphore(spec.get("max_pending_opens", 32))
        self.stop_at = float("inf")
        # The ramp: every worker opens its stream first; the load starts when all are
        # open (or the ramp timed out), so its first minute is a minute of C streams.
        self.opened_first = 0
        self.ramped = asyncio.Event()
        self.go = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.open_streams = 0
        self.tokens = 0
        self.latency: list[float] = []  # s, live deltas since the last progress line
        self.lag: list[float] = []  # s, this client's event-loop lag, same interval

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def think(self) -> float:
        return random.uniform(0, 2 * self.spec.get("think", 0.0))

    async def request(self, method: str, path: str, auth: dict, body: Any = None):
        """(status, JSON body or None, headers); a connection error or a request that
        takes longer than 30 s raises (the caller counts it)."""
        assert self.session is not None
        async with asyncio.timeout(30):
            async with self.session.request(
                method, self.base + path, json=body, headers=auth
            ) as resp:
                raw = await resp.read()
                try:
                    data = json.loads(raw) if raw else None
                except ValueError:
                    data = None
                return resp.status, data, resp.headers


class Worker:
    def __init__(self, soak: Soak, i: int) -> None:
        spec = soak.spec
        user = spec["users"][i % len(spec["users"])]
        self.soak = soak
        self.auth = {"Authorization": f"Bearer {user['access']}"}
        self.conversation = user["conversations"][
            (i // len(spec["users"])) % len(user["conversations"])
        ]
        self.answers: dict[str, Answer] = {}
        self.finished: deque[str] = deque(maxlen=64)  # ids whose answer was checked
        self.last_id = ""  # the last SSE id, over every connection of this conversation
        self.token_url: str | None = None
        self.token_expires = 0.0
        self.resp: aiohttp.ClientResponse | None = None
        self.reader: asyncio.Task | None = None
        self.lost = asyncio.Event()  # the open stream ended without being asked to
        self.counted = False  # the open stream is in `soak.open_streams`
        self.answers_here = 0

    # --- the stream -------------------------------------------------------------------

    async def _stream_url(self) -> str | None:
        """The stream URL with a stream token, reused while it is valid (as the page
        reuses its EventSource URL), on the stream base."""
        if self.token_url is not None and time.time() < self.token_expires:
            return self.token_url
        path = f"/api/v1/conversations/{self.conversation}/stream-token/"
        status, body, _ = await self.soak.request("POST", path, self.auth)
        if status != 201:
            self.soak.error(f"stream_token_http_{status}")
            return None
        parts = urllib.parse.urlsplit(body["stream_url"])
        self.token_url = self.soak.stream_base + urllib.parse.urlunsplit(("", "", *parts[2:]))
        self.token_expires = time.time() + body["expires_in"] - 15
        return self.token_url

    async def connect(self, *, resume: bool) -> bool:
        """Open the conversation's stream (with `Last-Event-ID` when resuming) and wait
        for its `retry:` block: the server has subscribed."""
        soak = self.soak
        assert soak.session is not None and self.resp is None
        try:
            url = await self._stream_url()
            if url is None:
                return False
            headers = {"Accept": "text/event-stream"}
            if resume and self.last_id:
                headers["Last-Event-ID"] = self.last_id
            async with asyncio.timeout(soak.message_timeout):
                resp = await soak.session.get(url, headers=headers)
                if resp.status != 200:
                    soak.error(f"stream_http_{resp.status}")
                    resp.close()
                    if resp.status == 401:
                        self.token_url = None  # expired or refused: mint another next time
                    return False
                subscribed = asyncio.Event()
                self.lost.clear()
                self.resp = resp
                self.reader = asyncio.create_task(self._read(resp, subscribed))
                await subscribed.wait()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            soak.error(f"stream_open_{type(exc).__name__}")
            await self.drop()
            return False
        soak.open_streams += 1
        self.counted = True
        soak.counts["streams_opened"] += 1
        return True

    async def connect_until_open(self, *, resume: bool, until: float | None = None) -> bool:
        """Connect, trying again every second until it works or `until` (time.time(),
        default: the end of the load) has passed."""
        until = self.soak.stop_at if until is None else until
        while not await self.connect(resume=resume):
            if time.time() >= until:
                return False
            await asyncio.sleep(1.0)
        return True

    async def drop(self) -> None:
        """Close the stream from this side (what a closed tab or a lost network does)."""
        reader, resp = self.reader, self.resp
        self.reader = self.resp = None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if resp is not None:
            resp.close()
        if self.counted:
            self.soak.open_streams -= 1
            self.counted = False
        self.lost.clear()

    async def _read(self, resp: aiohttp.ClientResponse, subscribed: asyncio.Event) -> None:
        parser = SSEParser()
        soak = self.soak
        try:
            async for chunk in resp.content.iter_any():
                t = time.time()
                for ev in parser.feed(chunk):
                    self._on_event(ev, t)
                if parser.retry is not None and not subscribed.is_set():
                    subscribed.set()
            soak.error("stream_eof")
        except (aiohttp.ClientError, OSError) as exc:
            soak.error(f"stream_{type(exc).__name__}")
        except (ValueError, KeyError, TypeError):  # an event the contract does not have
            soak.error("stream_bad_event")
        self.lost.set()  # only reached when the server ended it (a drop cancels this task)

    def _answer(self, message_id: str) -> Answer | None:
        if message_id in self.finished:
            self.soak.error("event_after_end")
            return None
        answer = self.answers.get(message_id)
        if answer is None:
            answer = self.answers[message_id] = Answer()
        return answer

    def _on_event(self, ev: Event, t: float) -> None:
        soak = self.soak
        if ev.id:
            self.last_id = ev.id
        data = json.loads(ev.data)
        if ev.type == "delta":
            answer = self._answer(data["message_id"])
            if answer is None:
                return
            if answer.end.done():
                soak.error("delta_after_end")
                return
            text = data["text"]
            answer.parts.append(text)
            answer.length += len(text)
            if ev.id != f"{data['message_id']}:{answer.length}":
                soak.error("delta_id_mismatch")
            stamps = STAMP.findall(text)
            answer.tokens += len(stamps)
            soak.tokens += len(stamps)
            if answer.live:
                soak.latency.extend(t - float(sent) for _, sent in stamps)
            if answer.want and answer.tokens >= answer.want and not answer.reached.done():
                answer.reached.set_result(None)
        elif ev.type == "message_start":
            answer = self._answer(data["message"]["id"])
            if answer is not None and answer.length:
                answer.restart()  # sent again in full (after a `reset`)
        elif ev.type == "message_end":
            answer = self._answer(data["message_id"])
            if answer is None:
                return
            if answer.end.done():
                soak.error("message_end_twice")
                return
            answer.status = data["status"]
            answer.end.set_result(None)
        elif ev.type == "error":
            soak.counts[f"error_event_{data.get('code')}"] += 1
        elif ev.type == "reset":
            # Only after a crash lost text (see docs/streaming.md): not in a soak.
            soak.error(f"reset_{data.get('reason')}")
        else:
            soak.error(f"event_{ev.type}")

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        soak = self.soak
        try:
            async with soak.open_slots:
                opened = await self.connect_until_open(resume=False)
            if not opened:
                return
            soak.opened_first += 1
            if soak.opened_first == soak.spec["concurrency"]:
                soak.ramped.set()
            await soak.go.wait()
            await asyncio.sleep(soak.think())  # users do not all start typing at once
            while time.time() < soak.stop_at:
                await self.cycle()
                await asyncio.sleep(soak.think())
        finally:
            await self.drop()

    async def cycle(self) -> None:
        soak, spec = self.soak, self.soak.spec
        full = self.answers_here >= spec["answers_per_conversation"]
        if full and not await self.new_conversation():
            await asyncio.sleep(1.0)
            return
        if self.resp is None or self.lost.is_set():
            await self.drop()  # the server ended it between answers: resume
            if not await self.connect_until_open(resume=True):
                return
        roll = random.random()
        if roll < spec["stop_fraction"]:
            plan = "stop"
        elif roll < spec["stop_fraction"] + spec["reconnect_fraction"]:
            plan = "reconnect"
        else:
            plan = "plain"
        path = f"/api/v1/conversations/{self.conversation}/messages/"
        body = await self.start_answer(path, {"content": "soak"}, "send")
        if body is None:
            return
        self.answers_here += 1
        message_id = body["assistant_message"]["id"]
        answer = self._answer(message_id)
        if answer is None:
            return
        expect: str | None = "complete"
        if plan == "stop":
            expect = await self.stop_midway(message_id, answer)
        elif plan == "reconnect":
            await self.reconnect_midway(answer)
        status = await self.finish(message_id, answer, plan=plan, expect=expect)
        if (
            status == "complete"
            and random.random() < spec["regenerate_fraction"]
            and time.time() < soak.stop_at
        ):
            path = f"/api/v1/messages/{message_id}/regenerate/"
            body = await self.start_answer(path, None, "regenerate")
            if body is not None:
                answer = self._answer(body["id"])
                if answer is not None:
                    await self.finish(body["id"], answer, plan="regenerate", expect="complete")
        self._forget_unclaimed()

    async def start_answer(self, path: str, payload: dict | None, kind: str) -> dict | None:
        """POST a send or a regenerate until it is accepted (a 503 is a refusal: wait its
        Retry-After, send again); its body, or None (counted) if it failed."""
        soak = self.soak
        while True:
            try:
                status, body, headers = await soak.request("POST", path, self.auth, payload)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                soak.error(f"{kind}_{type(exc).__name__}")
                await asyncio.sleep(1.0)
                return None
            if status == 503:
                soak.counts["refused"] += 1
                if time.time() >= soak.stop_at:
                    return None
                await asyncio.sleep(_retry_after(headers.get("Retry-After")))
                continue
            if status != 201:
                soak.error(f"{kind}_http_{status}")
                await asyncio.sleep(1.0)
                return None
            soak.counts[f"{kind}s_accepted"] += 1
            return body

    async def _until_tokens(self, answer: Answer, at_most: float) -> bool:
        """Wait until `answer` has a random number of its tokens (at most the fraction
        `at_most` of them); False if it ended first or the stream was lost."""
        answer.want = random.randint(1, max(1, int(self.soak.expected * at_most)))
        if answer.tokens >= answer.want:
            return True
        lost = asyncio.create_task(self.lost.wait())
        try:
            await asyncio.wait(
                {answer.reached, answer.end, lost},
                timeout=self.soak.message_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost.cancel()
        return answer.reached.done() and not answer.end.done()

    async def stop_midway(self, message_id: str, answer: Answer) -> str | None:
        """Stop the answer mid-stream; the status it must end with (None: either, the
        stop's request failed)."""
        soak = self.soak
        # At most half-way: what the client has lags what the server has generated by
        # the relay's latency, and a stop that comes after the end is no stop.
        if not await self._until_tokens(answer, 0.5):
            soak.counts["stops_skipped_ended"] += 1
            return "complete"
        path = f"/api/v1/messages/{message_id}/cancel/"
        try:
            status, body, _ = await soak.request("POST", path, self.auth)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            soak.error(f"cancel_{type(exc).__name__}")
            return None
        if status == 200:
            soak.counts["stops_confirmed"] += 1
            answer.stored = body["content"]
            return "cancelled"
        if status == 202:  # its owner had not saved it within the view's wait
            soak.counts["stops_unconfirmed"] += 1
            return "cancelled"
        if status == 409:  # it ended on its own before the stop reached it
            soak.counts["stops_too_late"] += 1
            return "complete"
        soak.error(f"cancel_http_{status}")
        return "cancelled"

    async def reconnect_midway(self, answer: Answer) -> None:
        """Drop the stream mid-answer, wait a little, resume with `Last-Event-ID`."""
        soak = self.soak
        if not await self._until_tokens(answer, 0.8):
            soak.counts["reconnects_skipped_ended"] += 1
            return
        await self.drop()
        answer.live = False
        soak.counts["reconnects"] += 1
        await asyncio.sleep(random.uniform(0, soak.spec["reconnect_pause"]))
        await self.connect_until_open(resume=True)

    async def finish(
        self, message_id: str, answer: Answer, *, plan: str, expect: str | None
    ) -> str | None:
        """Wait for the answer's end (resuming the stream if the server ended it),
        check its status (`expect`; None: `complete` or `cancelled`) and text; its
        status, or None if it never ended."""
        soak = self.soak
        deadline = time.monotonic() + soak.message_timeout
        while not answer.end.done():
            if self.resp is None or self.lost.is_set():
                await self.drop()
                answer.live = False
                until = time.time() + deadline - time.monotonic()
                if not await self.connect_until_open(resume=True, until=until):
                    break
                continue
            lost = asyncio.create_task(self.lost.wait())
            try:
                await asyncio.wait(
                    {answer.end, lost},
                    timeout=deadline - time.monotonic(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                lost.cancel()
            if time.monotonic() >= deadline:
                break
        self.answers.pop(message_id, None)
        self.finished.append(message_id)
        soak.counts[f"answers_{plan}"] += 1
        if not answer.end.done():
            soak.error("answer_timeout")
            await self.drop()  # whatever this stream is doing, start afresh
            return None
        status = answer.status
        soak.counts[f"status_{status}"] += 1
        if status != expect and (expect is not None or status not in ("complete", "cancelled")):
            soak.error(f"{plan}_ended_{status}")
            return status
        text = answer.text
        problem = check_text(text, soak.expected if status == "complete" else None)
        if problem is not None:
            soak.error(f"{plan}_text_{problem}")
        elif answer.stored is not None and text != answer.stored:
            soak.error("stop_text_differs_from_stored")
        else:
            soak.counts[f"{plan}_verified"] += 1
        return status

    async def new_conversation(self) -> bool:
        soak = self.soak
        try:
            status, body, _ = await soak.request(
                "POST", "/api/v1/conversations/", self.auth, {"title": "soak"}
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            soak.error(f"conversation_{type(exc).__name__}")
            return False
        if status != 201:
            soak.error(f"conversation_http_{status}")
            return False
        await self.drop()
        self.conversation = body["id"]
        self.token_url, self.last_id, self.answers_here = None, "", 0
        self.finished.clear()
        soak.counts["conversations_started"] += 1
        return await self.connect_until_open(resume=False)

    def _forget_unclaimed(self) -> None:
        """Answers the stream delivered that no send of this worker returned (none
        should be): counted and dropped, so a long soak does not pile them up."""
        for message_id in [m for m, a in self.answers.items() if a.end.done()]:
            del self.answers[message_id]
            self.soak.error("answer_unclaimed")


# ------------------------------------------------------------------------- the run


async def _progress(soak: Soak, path: str, every: float, stop: asyncio.Event) -> None:
    """A line of progress every `every` s (the last one when the load client ends)."""
    last_t, last_tokens = time.time(), 0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        t = time.time()
        latency, soak.latency = sorted(soak.latency), []
        lag, soak.lag = sorted(soak.lag), []
        line = {
            "time": t,
            "open_streams": soak.open_streams,
            "tokens": soak.tokens,
            "tokens_per_second": (soak.tokens - last_tokens) / (t - last_t),
            "latency_p50_ms": _ms(percentile(latency, 50)),
            "latency_p99_ms": _ms(percentile(latency, 99)),
            "latency_max_ms": _ms(latency[-1] if latency else None),
            "client_lag_p99_ms": _ms(percentile(lag, 99)),
            "errors": sum(soak.errors.values()),
            "counts": dict(soak.counts),
            "errors_by_kind": dict(soak.errors),
        }
        _append_line(path, json.dumps(line))
        last_t, last_tokens = t, soak.tokens
        if stop.is_set():
            return


def _append_line(path: str, line: str) -> None:
    # A few hundred bytes every few seconds: not worth a thread.
    with open(path, "a") as f:
        f.write(line + "\n")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def _watch_lag(soak: Soak, stop: asyncio.Event) -> None:
    """This client's own event-loop lag: a busy client delays what it measures."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.05)
        soak.lag.append(loop.time() - t - 0.05)


async def run_soak(spec: dict) -> dict:
    soak = Soak(spec)
    C = spec["concurrency"]
    per_tick = max(1, spec.get("ramp_per_10ms", 10))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        soak.session = session
        ramp_started = time.time()
        progress = asyncio.create_task(
            _progress(soak, spec["progress_path"], spec.get("sample_every", 10.0), stop)
        )
        lag = asyncio.create_task(_watch_lag(soak, stop))
        tasks = []
        for i in range(C):
            tasks.append(asyncio.create_task(Worker(soak, i).run()))
            if (i + 1) % per_tick == 0:
                await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(soak.ramped.wait(), spec.get("ramp_timeout", 120.0))
        except TimeoutError:
            soak.errors["ramp_timed_out"] += 1  # the load starts with the streams it has
        started = time.time()
        soak.stop_at = started + spec["seconds"]
        soak.go.set()
        # After the end no answer starts; those in flight (and a regeneration) finish.
        done, pending = await asyncio.wait(
            tasks, timeout=spec["seconds"] + 2 * soak.message_timeout + 60
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            soak.errors["workers_cancelled_at_end"] += len(pending)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                soak.errors[f"worker_crash_{type(task.exception()).__name__}"] += 1
        ended = time.time()
        stop.set()
        await asyncio.gather(progress, lag)
    return {
        "mode": "soak",
        "concurrency": C,
        "ramp_started": ramp_started,
        "streams_opened_in_ramp": soak.opened_first,
        "load_started": started,
        "load_stopped": soak.stop_at,
        "load_ended": ended,
        "tokens": soak.tokens,
        "counts": dict(soak.counts),
        "errors": dict(soak.errors),
        "error_count": sum(soak.errors.values()),
    }
