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
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading

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


def main() -> None:
    trace = os.environ.get("BENCH_TRACEMALLOC")
    if trace:
        threading.Thread(target=_tracemalloc_writer, args=(trace,), daemon=True).start()
    path = os.environ.get("BENCH_DB_COUNTS")
    if path:
        connection_created.connect(_on_connection, weak=False)
        threading.Thread(target=_writer, args=(path,), daemon=True).start()
    module = sys.argv.pop(1)
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
