"""`python -m bench.soak`: does chatsite stay flat through a long load with churn?

1. Start the fake upstream (core 1) and one chatsite system (core 0; default
   `chatsite-pg-uvicorn`, PostgreSQL + Redis), exactly as `bench.run` starts them
   (`bench/systems.py`), with each server process writing its event loop's gauges
   (`BENCH_GAUGES`, see `bench/sut_launch.py`); prepare C users and conversations.
2. Run the soak client (`bench/soak_client.py`, through `bench.run.loadgen`) on core 1
   for `--minutes`: C streams that send, stop, drop and resume, regenerate and start
   new conversations, checking every answer's text.
3. Meanwhile, every `--sample-every` s (`Sampler`): the server's RSS, open file
   descriptors, threads and CPU (psutil); its asyncio tasks, open streams, runs and loop
   lag (the gauges); PostgreSQL connections to the bench database (`pg_stat_activity`)
   and answers pending or streaming; Redis connections to the bench database number
   (`CLIENT LIST`), all of Redis's clients, the keys of the bench database and Redis's
   memory.
4. After the load: wait `--drain` s plus a sweep interval (`--sweep-wait`), sample once
   more, count the answers left `pending` or `streaming` (must be 0) and the statuses of
   the answers the soak created, then stop everything.
5. Write `soak.md`, `soak.json` and `soak.png` (`bench/soak_report.py`) in `--out`; raw
   data (spec, client result and progress, logs) under `<out>/raw/soak-<UTC time>/`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sqlite3
import sys
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from bench import soak_report
from bench.loadgen import ProcGroup
from bench.run import RESULTS, _interrupt, loadgen
from bench.systems import (
    PG_DB,
    Chatsite,
    System,
    _psycopg,
    all_systems,
    machine_info,
    start_upstream,
)

ACTIVE = ("pending", "streaming")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="length of the load (15)")
    p.add_argument("--concurrency", type=int, default=200, help="streams, one per user (200)")
    p.add_argument("--system", default="chatsite-pg-uvicorn", help="a chatsite system of bench.run")
    p.add_argument("--tokens", type=int, default=300, help="deltas per answer (300)")
    p.add_argument("--tokens-per-second", type=float, default=50.0, help="per answer (50)")
    p.add_argument("--think", type=float, default=6.0, help="mean s between answers (6)")
    p.add_argument("--stop-fraction", type=float, default=0.1, help="answers stopped (0.1)")
    p.add_argument("--reconnect-fraction", type=float, default=0.2, help="answers resumed (0.2)")
    p.add_argument("--regenerate-fraction", type=float, default=0.1, help="finished answers (0.1)")
    p.add_argument("--reconnect-pause", type=float, default=2.0, help="s, at most (2)")
    p.add_argument("--answers-per-conversation", type=int, default=10, help="then a new one (10)")
    p.add_argument("--sample-every", type=float, default=10.0, help="s (10)")
    p.add_argument("--drain", type=float, default=5.0, help="s after the load (5)")
    p.add_argument(
        "--sweep-wait", type=float, default=5.0, help="s, one sweep (CHAT_RUN_HEARTBEAT_SECONDS)"
    )
    p.add_argument("--message-timeout", type=float, default=60.0, help="s per answer (60)")
    p.add_argument("--ramp", type=int, default=10, help="streams opened per 10 ms at most")
    p.add_argument("--ramp-timeout", type=float, default=120.0, help="s to open every stream (120)")
    p.add_argument("--max-pending-opens", type=int, default=32, help="opens in flight at most")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    args = p.parse_args(argv)
    if args.stop_fraction + args.reconnect_fraction > 1:
        p.error("--stop-fraction + --reconnect-fraction must be at most 1")
    return args


# ----------------------------------------------------------------------- sampling


class Database:
    """Reads of the system's database: its connections and its answers' statuses."""

    def __init__(self, system: Chatsite) -> None:
        self.postgres = system.postgres
        self.sqlite_path = system.workdir / "bench.sqlite3"
        self._conn = None

    def _query(self, sql: str, params: list) -> list[tuple]:
        if self._conn is None:
            if self.postgres:
                # Connected to the bench database itself; its own backend is left out
                # of the connection count (`pg_backend_pid()`).
                self._conn = _psycopg(PG_DB)
            else:
                uri = f"file:{self.sqlite_path}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
        if self.postgres:
            return self._conn.execute(sql, params).fetchall()
        return self._conn.execute(sql.replace("%s", "?"), params).fetchall()

    def connections(self) -> dict[str, int] | None:
        """PostgreSQL connections to the bench database, by state (None on SQLite)."""
        if not self.postgres:
            return None
        rows = self._query(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY 1",
            [PG_DB],
        )
        return dict(rows)

    def active_answers(self) -> int:
        rows = self._query(
            "SELECT count(*) FROM chat_message WHERE status IN (%s, %s)", list(ACTIVE)
        )
        return rows[0][0]

    def stuck(self, limit: int = 20) -> list[dict]:
        """Answers still pending or streaming: what they are, for the report."""
        rows = self._query(
            "SELECT id, status, run_owner, created_at FROM chat_message"
            " WHERE status IN (%s, %s) ORDER BY created_at LIMIT %s",
            [*ACTIVE, limit],
        )
        return [
            {"id": str(r[0]), "status": r[1], "run_owner": r[2], "created_at": str(r[3])}
            for r in rows
        ]

    def statuses_since(self, t: float) -> dict[str, int]:
        """Answers created since `t` (time.time()), by status."""
        since = datetime.fromtimestamp(t, UTC)
        if not self.postgres:  # Django stores SQLite datetimes as UTC text
            since = since.strftime("%Y-%m-%d %H:%M:%S.%f")
        rows = self._query(
            "SELECT status, count(*) FROM chat_message"
            " WHERE role = 'assistant' AND created_at >= %s GROUP BY status",
            [since],
        )
        return dict(rows)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class RedisGauges:
    """Connections to the bench database number, all of Redis's clients, the bench
    database's keys, Redis's memory."""

    def __init__(self, url: str) -> None:
        import redis

        self.db = str(urllib.parse.urlsplit(url).path.lstrip("/") or "0")
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.own_id: int | None = None

    def sample(self) -> dict:
        if self.own_id is None:
            self.own_id = self.client.client_id()
        clients = [
            c
            for c in self.client.client_list()
            if str(c.get("db")) == self.db and int(c["id"]) != self.own_id
        ]
        info = self.client.info()
        by_command: dict[str, int] = {}
        for c in clients:  # which of them is what: the layer subscribes, the rest do work
            by_command[c.get("cmd", "?")] = by_command.get(c.get("cmd", "?"), 0) + 1
        return {
            "redis_clients": len(clients),
            "redis_clients_by_last_command": by_command,
            "redis_clients_all": info["connected_clients"],
            "redis_keys": self.client.dbsize(),
            "redis_used_memory_mb": info["used_memory"] / 2**20,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class Sampler:
    """Samples the system every `every` s on a thread of its own, until stopped."""

    GAUGE_SUMS = ("asyncio_tasks", "open_streams", "runs", "run_limit")

    def __init__(self, system: Chatsite, every: float, progress_path: Path) -> None:
        self.system = system
        self.every = every
        self.progress_path = progress_path
        self.procs = ProcGroup("sut", **system.sut_procs())
        self.database = Database(system)
        url = system.redis_url()
        self.redis = RedisGauges(url) if url else None
        self.samples: list[dict] = []
        self._last_cpu: tuple[float, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.database.close()
        if self.redis is not None:
            self.redis.close()

    def _loop(self) -> None:
        per_minute = max(1, round(60 / self.every))
        while True:
            sample = self.sample()
            if len(self.samples) % per_minute == 0:
                self._print(sample)
            if self._stop.wait(self.every):
                return

    def _print(self, s: dict) -> None:
        """About once a minute, a line to watch a long soak by."""
        client: dict = {}
        with contextlib.suppress(OSError, ValueError, IndexError):
            client = json.loads(self.progress_path.read_text().splitlines()[-1])

        def f(key: str, row: dict = s, spec: str = ".0f") -> str:
            value = row.get(key)
            return "—" if value is None else format(value, spec)

        print(
            f"[{datetime.now(UTC):%H:%M:%S}] rss {f('rss_mb')} MB, fds {f('fds')},"
            f" threads {f('threads')}, tasks {f('asyncio_tasks')}, streams"
            f" {f('open_streams')}, runs {f('runs')}, active {f('active_answers')},"
            f" pg {f('pg_connections')}, redis {f('redis_clients')}, cpu"
            f" {f('cpu_utilisation', spec='.0%')}; client {f('tokens_per_second', client)}"
            f" tok/s, p99 {f('latency_p99_ms', client)} ms, errors {f('errors', client)}",
            flush=True,
        )

    def sample(self) -> dict:
        """One sample, appended to `samples`; a part that cannot be read is noted in
        `sample_errors`, never fatal."""
        with self._lock:
            t = time.time()
            sample: dict = {"time": t}
            errors: dict[str, str] = {}
            proc = self.procs.sample()
            sample |= {
                "rss_mb": proc["rss"] / 2**20,
                "fds": proc["fds"],
                "threads": proc["threads"],
            }
            if self._last_cpu is not None and t > self._last_cpu[0]:
                last_t, last_cpu = self._last_cpu
                sample["cpu_utilisation"] = (proc["cpu"] - last_cpu) / (t - last_t)
            self._last_cpu = (t, proc["cpu"])
            gauges = [g for g in self.system.read_gauges() if g and "error" not in g]
            if gauges:
                for key in self.GAUGE_SUMS:
                    values = [g[key] for g in gauges if key in g]
                    if values:
                        sample[key] = sum(values)
                sample["loop_lag_ms"] = max(g["loop_lag_ms"] for g in gauges)
                sample["gauges_age_s"] = t - min(g["time"] for g in gauges)
                tasks: dict[str, int] = {}
                for g in gauges:
                    for name, n in g.get("tasks_by_coroutine", {}).items():
                        tasks[name] = tasks.get(name, 0) + n
                sample["tasks_by_coroutine"] = tasks
            else:
                errors["gauges"] = "no gauges written yet"
            try:
                connections = self.database.connections()
                if connections is not None:
                    sample["pg_connections"] = sum(connections.values())
                    sample["pg_connections_by_state"] = connections
                sample["active_answers"] = self.database.active_answers()
            except Exception as exc:
                errors["database"] = str(exc)[:200]
                self.database.close()  # reconnect next time
            if self.redis is not None:
                try:
                    sample |= self.redis.sample()
                except Exception as exc:
                    errors["redis"] = str(exc)[:200]
            if errors:
                sample["sample_errors"] = errors
            self.samples.append(sample)
            return sample


# ------------------------------------------------------------------------- the soak


def soak(args: argparse.Namespace, system: Chatsite, rawdir: Path) -> dict:
    logdir = rawdir / "logs"
    system.gauges = True
    system.setup(logdir)
    versions = system.versions()
    upstream, upstream_url = start_upstream(logdir, args.tokens, args.tokens_per_second)
    sampler: Sampler | None = None
    try:
        system.start(upstream_url, logdir)
        prep = system.prepare(streams=args.concurrency, idle=False, logdir=logdir, tag="soak")
        progress_path = rawdir / "soak.progress.jsonl"
        sampler = Sampler(system, args.sample_every, progress_path)
        sampler.start()  # the first samples are the baseline: server up, no stream open
        time.sleep(min(args.sample_every, 5.0) + 0.5)
        seconds = args.minutes * 60
        spec = {
            "mode": "soak",
            "base_url": system.base_url,
            "stream_base_url": system.stream_base_url or system.base_url,
            "concurrency": args.concurrency,
            "seconds": seconds,
            "expected_tokens": args.tokens,
            "think": args.think,
            "stop_fraction": args.stop_fraction,
            "reconnect_fraction": args.reconnect_fraction,
            "regenerate_fraction": args.regenerate_fraction,
            "reconnect_pause": args.reconnect_pause,
            "answers_per_conversation": args.answers_per_conversation,
            "message_timeout": args.message_timeout,
            "ramp_per_10ms": args.ramp,
            "ramp_timeout": args.ramp_timeout,
            "max_pending_opens": args.max_pending_opens,
            "sample_every": args.sample_every,
            "progress_path": str(progress_path),
            **prep,
        }
        print(f"[{datetime.now(UTC):%H:%M:%S}] load: {args.minutes:g} min ...", flush=True)
        timeout = args.ramp_timeout + seconds + 2 * args.message_timeout + 180
        client = loadgen(spec, rawdir, "soak", timeout=timeout)
        print(
            f"[{datetime.now(UTC):%H:%M:%S}] load ended; drain {args.drain:g} s"
            f" + sweep {args.sweep_wait:g} s",
            flush=True,
        )
        time.sleep(args.drain + args.sweep_wait)
        final = sampler.sample()
        database = sampler.database
        end = {
            "final_sample": final,
            "left_active": database.active_answers(),
            "left_active_answers": database.stuck(),
            "statuses": database.statuses_since(client["load_started"]),
        }
    finally:
        if sampler is not None:
            sampler.stop()
            # Kept whatever happened: a soak that failed late is still worth reading.
            (rawdir / "soak.samples.json").write_text(json.dumps(sampler.samples, indent=1))
        system.stop()
        upstream.stop()
        system.teardown()
    progress_path = Path(spec["progress_path"])
    progress = [json.loads(line) for line in progress_path.read_text().splitlines() if line]
    return {
        "versions": versions,
        "client": client,
        "progress": progress,
        "samples": sampler.samples,
        "end": end,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    command = "python -m bench.soak" + ("" if not argv else " " + shlex.join(argv))
    system: System | None = all_systems().get(args.system)
    if not isinstance(system, Chatsite):
        chatsites = [n for n, s in all_systems().items() if isinstance(s, Chatsite)]
        raise SystemExit(f"--system must be one of {', '.join(chatsites)}")
    started = datetime.now(UTC)
    out = Path(args.out)
    rawdir = out / "raw" / f"soak-{started:%Y%m%dT%H%M%SZ}"
    (rawdir / "logs").mkdir(parents=True, exist_ok=True)
    print(f"soak: raw data in {rawdir}", flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    meta = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "system": args.system,
        "label": system.label,
        "settings": settings,
        "rawdir": str(rawdir),
    }
    try:
        result = soak(args, system, rawdir)
    except KeyboardInterrupt:
        raise SystemExit("soak: interrupted; nothing written") from None
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["versions"] = result.pop("versions")
    (rawdir / "soak.raw.json").write_text(json.dumps({"meta": meta, **result}, indent=1))
    paths = soak_report.write(meta, result, out)
    print("\n" + paths["markdown_text"])
    print(f"soak: wrote {paths['md']}, {paths['json']}, {paths['png']}")
    print(f"soak: reproduce with: {command}", flush=True)


if __name__ == "__main__":
    main()
