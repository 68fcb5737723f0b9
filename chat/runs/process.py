"""The one object that owns this process's runs: start, stop, checkpoints, leases, drain.

Each process has one `RunManager` (`chat.runs.manager`). It

* **starts** runs from the jobs sends prepare, on the server's event loop, and
  refuses new ones past `CHAT_MAX_RUNS_PER_PROCESS` (`has_capacity`);
* **stops** them: a run of this process is cancelled at once; a run of another
  process is asked through that process's fan-out channel (its lease names it),
  and the `cancel_requested` flag, read every heartbeat, covers a lost message;
* **checkpoints** every run's text to the database, one statement per interval
  for all of them;
* renews the runs' **leases** every heartbeat (one statement) and **sweeps**
  other processes' orphans (chat/runs/sweeper.py);
* **drains** on shutdown: no new runs, running ones get `drain` seconds to
  finish, the rest are interrupted, and open streams are closed so browsers
  reconnect to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from ..conf import chat_settings
from ..errors import BackendUnavailable
from ..events import ConversationDeleted, conversation_group
from ..fanout import Fanout, fanout
from ..outbox import Outbox, outbox
from ..providers import get_provider
from . import store
from .job import RunJob
from .run import Run, StopReason
from .sweeper import sweep

logger = logging.getLogger(__name__)

_STOP = "run.stop"
_CPU_PROBE_SECONDS = 0.25
_MIN_RUN_LIMIT = 10
_RUN_LIMIT_STEP = 5


@dataclass
class _Local:
    run: Run
    task: asyncio.Task | None = None
    started: bool = False  # its coroutine has begun (a task cancelled before never runs it)


class RunManager:
    def __init__(self, *, transport: Fanout = fanout, output: Outbox = outbox) -> None:
        self.transport = transport
        self.outbox = output
        self.draining = False
        self._runs: dict[str, _Local] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._held: set[asyncio.Future] = set()
        # The share of one core this process used, smoothed over about two seconds, and
        # the number of runs it may have at once (see `_adjust_run_limit`).
        self.cpu_busy = 0.0
        self.run_limit = chat_settings.ADMISSION_INITIAL_RUNS
        transport.on_control(_STOP, self._on_control)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the manager (and every run of this process) lives on."""
        return self._loop

    @property
    def channel(self) -> str | None:
        """This process's address: run leases name it, stop requests go to it."""
        return self.transport.channel

    def run_ids(self) -> list[str]:
        return list(self._runs)

    def has_capacity(self) -> bool:
        """Whether a new run may start now (see `_adjust_run_limit`)."""
        return len(self._runs) < self.run_limit

    async def ensure_started(self) -> None:
        """Start the background work on this event loop (idempotent, cheap after the first)."""
        loop = asyncio.get_running_loop()
        if self._tasks and self._loop is loop:
            return
        # A server has one loop for its life; only tests run several in turn.
        self._loop, self._tasks = loop, []
        # Build the provider (importing its SDK takes a second or two) off the
        # event loop: a blocked loop renews no leases and serves no streams.
        await asyncio.to_thread(get_provider)
        if self._tasks:
            return
        self._tasks = [
            loop.create_task(
                self._every(lambda: chat_settings.RUN_HEARTBEAT_SECONDS, self.tick),
                name="chat-leases",
            ),
            # Four looks per interval: each run is saved between one and 1.25 intervals
            # after its previous save, and the runs due at one look share one statement.
            loop.create_task(
                self._every(lambda: chat_settings.CHECKPOINT_INTERVAL / 4, self.checkpoint),
                name="chat-checkpoints",
            ),
            loop.create_task(self._measure_cpu(), name="chat-cpu"),
        ]
        # The fan-out channel is this process's address in run leases.
        with contextlib.suppress(BackendUnavailable, TimeoutError):
            async with asyncio.timeout(chat_settings.REDIS_TIMEOUT_SECONDS):
                await self.transport.start()

    # --- starting --------------------------------------------------------------------

    def start(self, job: RunJob) -> None:
        """Start `job`'s run on the server's event loop (call from sync code, after commit).

        From a request thread the run is handed to the loop without waiting for it:
        the send's response need not wait for the loop to get round to it, and a
        stop asked afterwards still finds the task (the loop runs callbacks in order).
        """
        self._call_on_loop(self._create_task, job)

    async def astart(self, job: RunJob) -> asyncio.Task:
        return self._create_task(job)

    def _create_task(self, job: RunJob) -> asyncio.Task:
        local = _Local(Run(job, outbox=self.outbox))
        # A fresh context: the run must not inherit the request's thread-sensitive
        # executor (and with it a thread and database connection per request).
        local.task = asyncio.get_running_loop().create_task(
            self._generate(local), name=f"run-{job.message_id}", context=contextvars.Context()
        )
        self._runs[job.message_id] = local
        local.task.add_done_callback(lambda _: self._forget(local))
        return local.task

    async def _generate(self, local: _Local) -> None:
        local.started = True
        job = local.run.job
        await self.ensure_started()
        if job.needs_claim and not await store.claim(job.message_id, self.channel or ""):
            return  # stopped, deleted, swept or claimed before it started
        await local.run.execute()

    def _forget(self, local: _Local) -> None:
        run = local.run
        if self._runs.get(run.id) is local:
            del self._runs[run.id]
        if local.task.cancelled() and not local.started and run.stop_reason == StopReason.USER:
            # Stopped before its first step: the coroutine never ran, so nothing
            # ended the answer. End it now, as a run that finds it stopped does.
            run.job.cancel_requested = True
            self._create_task(run.job)

    # --- stopping --------------------------------------------------------------------

    def stop_local(self, message_id: str, reason: StopReason = StopReason.USER) -> bool:
        """Cancel a run this process owns; the run then ends its answer as `reason` says."""
        local = self._runs.get(message_id)
        if local is None or local.task.done():
            return False
        if local.run.stop_reason is None:
            local.run.stop_reason = reason
        local.task.cancel()
        return True

    async def astop(
        self, message_id: str, owner: str, reason: StopReason = StopReason.USER
    ) -> None:
        """Stop a run wherever it runs: here at once, elsewhere through its owner's channel."""
        if self.stop_local(message_id, reason) or not owner or owner == self.channel:
            return
        message = {"type": _STOP, "message_id": message_id, "reason": str(reason)}
        with contextlib.suppress(BackendUnavailable):
            await self.transport.send_control(owner, message)

    def stop(self, message_id: str, owner: str, reason: StopReason = StopReason.USER) -> None:
        """`astop` from sync code (a request thread)."""
        async_to_sync(self.astop)(message_id, owner, reason)

    def _on_control(self, message: dict) -> None:
        self.stop_local(message["message_id"], StopReason(message.get("reason", "user")))

    def conversation_deleted(self, conversation_id: str, active: list[tuple[str, str]]) -> None:
        """After a conversation's deletion commits: stop its run (given as (id, owner)
        pairs) and tell its open streams, which end."""

        async def tell() -> None:
            for message_id, owner in active:
                await self.astop(message_id, owner, StopReason.DELETED)
            # A run of ours tells its viewers first (`message_end` with its full length).
            ours = [self._runs[m].task for m, _ in active if m in self._runs]
            if ours:
                await asyncio.wait(ours, timeout=2.0)
            await self.outbox.emit_and_flush(
                conversation_group(conversation_id), ConversationDeleted(conversation_id)
            )

        self._call_on_loop(self._background, tell(), wait=True)

    def _background(self, work: Awaitable) -> asyncio.Future:
        task = asyncio.ensure_future(work)
        self._held.add(task)  # a task nobody holds may be dropped by the loop
        task.add_done_callback(self._held.discard)
        return task

    async def _measure_cpu(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        while True:
            await asyncio.sleep(_CPU_PROBE_SECONDS)
            now_wall, now_cpu = time.monotonic(), time.process_time()
            busy = (now_cpu - cpu) / max(now_wall - wall, 1e-3)
            wall, cpu = now_wall, now_cpu
            self.cpu_busy += (busy - self.cpu_busy) * 0.15
            self._adjust_run_limit()

    def _adjust_run_limit(self) -> None:
        """Admission control: how many runs this process may have at once.

        A Python process works on one core (the GIL): past it, every event of every
        stream waits in a queue that only grows. So the limit backs off (to 95% of the
        runs there are) while the process is busier than `CHAT_ADMISSION_MAX_CPU`, and
        grows by a few runs a step while it is near the limit with CPU to spare, up to
        `CHAT_MAX_RUNS_PER_PROCESS`. Growing slowly matters: a freed-up capacity taken by a
        burst of starts (each costs milliseconds) is what made admitted streams stall,
        measured at C = 1,000.
        """
        runs = len(self._runs)
        if self.cpu_busy > chat_settings.ADMISSION_MAX_CPU:
            self.run_limit = max(_MIN_RUN_LIMIT, int(min(self.run_limit, runs) * 0.95))
        elif runs >= self.run_limit - _RUN_LIMIT_STEP:
            self.run_limit = min(
                chat_settings.MAX_RUNS_PER_PROCESS, self.run_limit + _RUN_LIMIT_STEP
            )

    # --- checkpoints, leases, sweeping --------------------------------------------------

    async def _every(self, seconds: Callable[[], float], work: Callable[[], Awaitable]) -> None:
        while True:
            await asyncio.sleep(seconds())
            try:
                await work()
            except Exception:
                logger.exception("%s failed", getattr(work, "__name__", work))

    async def checkpoint(self) -> None:
        """Save the text of every run that has new text and was last saved (or
        started) at least one interval ago."""
        now = time.monotonic()
        due = now - chat_settings.CHECKPOINT_INTERVAL
        texts, first_tokens = {}, {}
        for message_id, local in list(self._runs.items()):
            run = local.run
            if run.length != run.checkpointed_length and run.checkpointed_at <= due:
                run.checkpointed_length, run.checkpointed_at = run.length, now
                texts[message_id] = run.text()
                first_tokens[message_id] = run.first_token_at
        if not texts:
            return
        try:
            lost = await store.save_checkpoints(texts, first_tokens)
        except Exception:
            # Not saved (the database stayed out of reach): again one interval later.
            for message_id in texts:
                if local := self._runs.get(message_id):
                    local.run.checkpointed_length = -1
            raise
        for message_id in lost:
            self.stop_local(message_id, StopReason.LOST)

    async def tick(self) -> None:
        """Renew our leases, act on stop flags, end other processes' orphans."""
        local = self.run_ids()
        if local:
            stop, lost = await store.renew_leases(local, self.channel or "")
            for message_id in stop:
                self.stop_local(message_id, StopReason.USER)
            for message_id in lost:
                self.stop_local(message_id, StopReason.LOST)
        if chat_settings.SWEEP_ORPHANS:
            await sweep(exclude=local, outbox=self.outbox)

    # --- shutdown --------------------------------------------------------------------

    async def wait(self, seconds: float) -> None:
        """Wait until every local run has ended, or `seconds` pass."""
        tasks = [local.task for local in self._runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=seconds)

    async def drain(self, seconds: float | None = None) -> None:
        """Finish what we can in `seconds`, interrupt the rest, close streams."""
        self.draining = True
        seconds = chat_settings.DRAIN_SECONDS if seconds is None else seconds
        logger.info("draining: %d runs, %d streams", len(self._runs), self.transport.stream_count)
        await self.wait(seconds)
        for message_id in self.run_ids():
            self.stop_local(message_id, StopReason.SHUTDOWN)
        await self.wait(10.0)  # their final saves
        self.transport.close_all()  # streams end; browsers reconnect elsewhere and resume
        for task in self._tasks:
            task.cancel()

    # --- the loop ----------------------------------------------------------------------

    def _call_on_loop(self, callback: Callable, *args, wait: bool = False) -> None:
        """Run `callback(*args)` on the server's loop: handed over from another thread,
        at once on the loop itself. Without a server loop (tests, commands) it runs in
        a loop of its own, and `wait` waits for the task it returns."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            loop.call_soon_threadsafe(callback, *args)
        elif _on_loop(loop):
            callback(*args)
        else:

            async def call() -> None:
                result = callback(*args)
                if wait and isinstance(result, asyncio.Future):
                    with contextlib.suppress(asyncio.CancelledError):
                        await result

            async_to_sync(call)()


def _on_loop(loop: asyncio.AbstractEventLoop | None) -> bool:
    try:
        return loop is not None and asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
