"""`python -m bench.sut_launch MODULE ARGS...` = `python -m MODULE ARGS...` (MODULE is
`chatsite.server` for daphne or `chatsite.uvicorn_server`) plus a database write
counter (the benchmark's only addition to the process under test).

Every database connection Django opens gets one more `execute_wrapper` that counts
statements, write statements (INSERT/UPDATE/DELETE) and the rows they wrote. A
daemon thread writes the counts to `BENCH_DB_COUNTS` (JSON) every 0.25 s when they
changed; it also counts writes by statement and table (`UPDATE "chat_message"`).
Cost: one Python call per SQL statement, next to Django's own ~50-100 µs.
It counts the same way on SQLite and PostgreSQL; on PostgreSQL the harness also
reads `pg_stat_database` as a cross-check.

With `BENCH_GAUGES=<file>` (the soak, `bench.soak`), another daemon thread rewrites
that file every `BENCH_GAUGES_SECONDS` (2 s) with what only the event loop can tell:
its asyncio tasks (and the most common coroutines among them), the open SSE streams
of this process, its runs and run limit, and how long the loop took to answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import runpy
import sys
import threading
import time
from collections import Counter

from django.db.backends.signals import connection_created

_lock = threading.Lock()
_counts = {"statements": 0, "writes": 0, "rows_written": 0}
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _count(execute, sql, params, many, context):
    result = execute(sql, params, many, context)
    write = sql.lstrip()[:7].upper().startswith(_WRITES)
    rows = 0
    kind = ""
    if write:
        try:
            rows = max(0, context["cursor"].rowcount)
        except Exception:
            rows = 0
        words = sql.split(None, 3)  # UPDATE "t" …, INSERT INTO "t" …, DELETE FROM "t" …
        kind = " ".join(words[:2] if words[0].upper() == "UPDATE" else words[:3])
    with _lock:
        _counts["statements"] += 1
        if write:
            _counts["writes"] += 1
            _counts["rows_written"] += rows
            _counts[kind] = _counts.get(kind, 0) + 1
    return result


def _on_connection(sender, connection, **kwargs) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def _writer(path: str) -> None:
    last = None
    event = threading.Event()
    while not event.wait(0.25):
        with _lock:
            snapshot = dict(_counts)
        if snapshot != last:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(snapshot, f)
            os.replace(tmp, path)
            last = snapshot


def _tracemalloc_writer(path: str) -> None:
    """`BENCH_TRACEMALLOC=<file>`: where the process's memory is, by allocating line,
    rewritten every 5 s (for the idle test: what one open stream costs)."""
    import tracemalloc

    tracemalloc.start(1)
    event = threading.Event()
    while not event.wait(5.0):
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snapshot.statistics("lineno")
        total = sum(stat.size for stat in stats)
        lines = [f"total {total / 1024:.0f} KiB in {sum(s.count for s in stats)} blocks"]
        lines += [f"{s.size / 1024:10.1f} KiB {s.count:8d} {s.traceback}" for s in stats[:60]]
        with open(f"{path}.tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(f"{path}.tmp", path)


def loop_gauges(loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> dict:
    """Read the gauges of `loop` from another thread.

    `asyncio.all_tasks(loop)` is only safe on the loop's own thread (the task set
    changes under a reader elsewhere), so the reading is a callback handed to the loop;
    this thread waits for its answer. The wait is the loop's lag.
    """
    answer: concurrent.futures.Future = concurrent.futures.Future()
    asked = time.monotonic()

    def read() -> None:
        try:
            answer.set_result(_read_gauges(loop, time.monotonic() - asked))
        except BaseException as exc:  # reported, never raised on the server's loop
            answer.set_exception(exc)

    loop.call_soon_threadsafe(read)
    return answer.result(timeout)


def _read_gauges(loop: asyncio.AbstractEventLoop, lag: float) -> dict:
    tasks = asyncio.all_tasks(loop)
    kinds = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)
    gauges: dict = {
        "asyncio_tasks": len(tasks),
        "tasks_by_coroutine": dict(kinds.most_common(8)),
        "loop_lag_ms": lag * 1000,
    }
    # The app's own gauges, if it has been imported (it has once the loop runs).
    fanout = getattr(sys.modules.get("chat.fanout"), "fanout", None)
    if fanout is not None:
        gauges["open_streams"] = fanout.stream_count
    manager = getattr(sys.modules.get("chat.runs"), "manager", None)
    if manager is not None:
        gauges["runs"] = len(manager.run_ids())
        gauges["run_limit"] = manager.run_limit
    return gauges


def _gauges_writer(path: str, every: float) -> None:
    event = threading.Event()
    while not event.wait(every):
        manager = getattr(sys.modules.get("chat.runs"), "manager", None)
        loop = manager.loop if manager is not None else None
        if loop is None or loop.is_closed():
            continue  # not started yet (or shutting down)
        try:
            gauges = loop_gauges(loop)
        except RuntimeError:  # the loop closed meanwhile
            continue
        except TimeoutError:
            gauges = {"error": "the event loop did not answer within 30 s"}
        gauges["time"] = time.time()
        with open(f"{path}.tmp", "w") as f:
            json.dump(gauges, f)
        os.replace(f"{path}.tmp", path)


def main() -> None:
    trace = os.environ.get("BENCH_TRACEMALLOC")
    if trace:
        threading.Thread(target=_tracemalloc_writer, args=(trace,), daemon=True).start()
    path = os.environ.get("BENCH_DB_COUNTS")
    if path:
        connection_created.connect(_on_connection, weak=False)
        threading.Thread(target=_writer, args=(path,), daemon=True).start()
    gauges = os.environ.get("BENCH_GAUGES")
    if gauges:
        every = float(os.environ.get("BENCH_GAUGES_SECONDS", "2"))
        threading.Thread(target=_gauges_writer, args=(gauges, every), daemon=True).start()
    module = sys.argv.pop(1)
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
