"""Start and stop what the benchmark runs: the fake upstream and each system under test.

Every process is started in its own session (process group), pinned to one core
(`os.sched_setaffinity` before exec, so all its threads stay there) and with its
open-file limit raised to the hard limit; `Proc.stop()` sends SIGTERM to the group,
then SIGKILL after a grace period. Output goes to log files under the raw results
directory, never to a pipe nobody reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SUT_CORE = 0
HARNESS_CORE = 1
# The bench's own PostgreSQL database and Redis database number. Both can be moved
# (`BENCH_PG_DB`, `BENCH_REDIS_DB`) so that two harnesses on one machine (a soak next
# to `bench.run`) neither share rows nor flush each other's Redis.
PG_DB = os.environ.get("BENCH_PG_DB", "chatsite_bench")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "15"))
PG_DSN = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
_PART_NAMES = "AB"  # the processes of a two-process system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _preexec(core: int):
    def setup() -> None:
        # If the orchestrator dies without cleaning up, the kernel kills us too.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return setup


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # Whatever is left of the group (children, or a process ignoring SIGTERM).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(
    name: str, cmd: list[str], *, core: int, env: dict | None, logdir: Path, cwd: Path = ROOT
) -> Proc:
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_preexec(core),
        )
    return Proc(name, popen, log)


def run_checked(cmd: list[str], *, env: dict, logdir: Path, name: str, timeout: float) -> None:
    """A bounded one-off command on the harness core (migrations, setup scripts)."""
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=timeout,
            preexec_fn=_preexec(HARNESS_CORE),
        )


def wait_http(url: str, ok: set[int], proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (127.0.0.1 only)
                if r.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.tail()}")


# ------------------------------------------------------------------------- upstream


def start_upstream(logdir: Path, tokens: int, tps: float) -> tuple[Proc, str]:
    """The fake Anthropic server with stamped deltas, on the harness core."""
    port = free_port()
    cmd = [PY, "-m", "chat.fake_anthropic", "--stamp", "--tokens", str(tokens)]
    cmd += ["--tokens-per-second", str(tps), "--port", str(port)]
    proc = spawn("upstream", cmd, core=HARNESS_CORE, env=dict(os.environ), logdir=logdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_fake/stats", {200}, proc, timeout=20)
    return proc, url


# ---------------------------------------------------------------------------- systems


@dataclass
class System:
    """A system under test. `kind` tells the load client which flow to drive."""

    name: str
    label: str
    kind: str  # "chatsite" or "peer"
    workdir: Path = field(default_factory=Path)
    proc: Proc | None = None
    base_url: str = ""
    # Where the client opens SSE streams; "" = base_url (see `chatsite-pg-2proc`).
    stream_base_url: str = ""

    def setup(self, logdir: Path) -> None:
        """Once per benchmark run (databases, migrations)."""

    def start(self, upstream_url: str, logdir: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def teardown(self) -> None:
        """Once at the end."""

    def versions(self) -> dict[str, str]:
        return {}

    def sut_procs(self) -> dict:
        assert self.proc is not None
        return {"pids": [self.proc.pid]}

    def sut_parts(self) -> dict[str, dict] | None:
        """{name: procs} when the system is several processes whose CPU is also
        reported one by one (the total is `sut_procs`)."""
        return None

    def backing_procs(self) -> dict[str, dict] | None:
        """{"postgres": procs, "redis": procs}: services the system uses, whose CPU is
        reported separately, not in the system's own."""
        return None

    def redis_url(self) -> str | None:
        """The Redis the system uses (its `INFO commandstats` is read around the load)."""
        return None

    def prepare(self, *, streams: int, idle: bool, logdir: Path, tag: str) -> dict:
        """Per point: what the load client needs (users, conversations, URLs)."""
        return {}

    def db_counters(self) -> dict | None:
        return None


class Chatsite(System):
    """chatsite as deployed, production settings, SQLite or PG+Redis, on one of its
    two servers: daphne (`chatsite.server`) or uvicorn (`chatsite.uvicorn_server`).

    With `processes=2` (PostgreSQL + Redis only): two servers on the same database and
    Redis, A and B. The client sends every message and mints every stream token on A
    (`base_url`) and opens every stream on B (`stream_base_url`), so every answer runs
    on A and is relayed to its watcher by B, through Redis."""

    def __init__(
        self,
        name: str,
        label: str,
        *,
        postgres: bool,
        server: str = "daphne",
        processes: int = 1,
    ) -> None:
        super().__init__(name=name, label=label, kind="chatsite")
        assert processes == 1 or postgres, "processes share state through PostgreSQL + Redis"
        self.postgres = postgres
        self.server = server
        self.processes = processes
        self.procs: list[Proc] = []
        self.counts_files: list[Path] = []
        # The soak turns this on: each process writes its event loop's gauges (asyncio
        # tasks, open streams, runs) to a file (`BENCH_GAUGES`, see bench/sut_launch.py).
        self.gauges = False
        self.gauge_files: list[Path] = []
        # Production settings refuse a short key; one per system, shared by its setup
        # (which mints tokens) and its servers (which check them).
        self.secret_key = secrets.token_urlsafe(50)

    def env(self, upstream_url: str = "http://127.0.0.1:9") -> dict:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chatsite.settings.production",
                "DJANGO_SECRET_KEY": self.secret_key,
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                # Plain HTTP on 127.0.0.1, no TLS proxy in front: no redirect to HTTPS.
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "ANTHROPIC_API_KEY": "bench",
                "ANTHROPIC_BASE_URL": upstream_url,
                # The load client is few users with many streams and answers: lift the
                # per-user stream cap and send throttle (both stay on, just high).
                "CHAT_MAX_STREAMS_PER_USER": "1000000",
                "CHAT_SEND_RATE": "1000000/s",
                "CHAT_STREAM_TOKEN_LIFETIME_SECONDS": "300",
                "CHAT_DRAIN_SECONDS": "2",
            }
        )
        if self.postgres:
            env["DATABASE_URL"] = PG_DSN
            env["REDIS_URL"] = REDIS_URL
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
            env.pop("REDIS_URL", None)
            # Production settings refuse SQLite and no Redis unless the site is one process.
            env["CHAT_SINGLE_PROCESS"] = "1"
        return env

    def setup(self, logdir: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        if self.postgres:
            _ensure_pg_database()
            _redis_flush()
        run_checked(
            [PY, "manage.py", "migrate", "--no-input"],
            env=self.env(),
            logdir=logdir,
            name=f"{self.name}-migrate",
            timeout=300,
        )

    def start(self, upstream_url: str, logdir: Path) -> None:
        if self.postgres:
            _redis_flush()  # every point starts with an empty Redis database
        self.procs, self.counts_files, self.gauge_files, urls = [], [], [], []
        for i in range(self.processes):
            part = "" if self.processes == 1 else f"-{_PART_NAMES[i]}"
            port = free_port()
            counts_file = self.workdir / f"db-counts{part}.json"
            with contextlib.suppress(FileNotFoundError):
                counts_file.unlink()
            env = self.env(upstream_url)
            env["BENCH_DB_COUNTS"] = str(counts_file)
            if self.gauges:
                gauge_file = self.workdir / f"gauges{part}.json"
                with contextlib.suppress(FileNotFoundError):
                    gauge_file.unlink()
                env["BENCH_GAUGES"] = str(gauge_file)
                self.gauge_files.append(gauge_file)
            if self.server == "uvicorn":
                cmd = [PY, "-m", "bench.sut_launch", "chatsite.uvicorn_server"]
                cmd += ["--host", "127.0.0.1", "--port", str(port)]
            else:
                cmd = [PY, "-m", "bench.sut_launch", "chatsite.server"]
                cmd += ["-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
            # Every process on the SUT core, two-process systems included: the machine
            # has two cores and the other is the harness's, and one core for the whole
            # system keeps its CPU per token comparable with the one-process systems.
            proc = spawn(f"{self.name}{part}", cmd, core=SUT_CORE, env=env, logdir=logdir)
            self.procs.append(proc)
            self.counts_files.append(counts_file)
            urls.append(f"http://127.0.0.1:{port}")
        self.proc = self.procs[0]
        self.base_url = urls[0]  # A: sends, stream tokens
        self.stream_base_url = urls[-1]  # B (or A itself): streams
        for proc, url in zip(self.procs, urls, strict=True):
            probe = f"{url}/stream/conversations/00000000-0000-0000-0000-000000000000/"
            wait_http(probe, {401}, proc, timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs = []
        self.proc = None

    def sut_procs(self) -> dict:
        assert self.procs
        return {"pids": [p.pid for p in self.procs]}

    def sut_parts(self) -> dict[str, dict] | None:
        if len(self.procs) < 2:
            return None
        return {_PART_NAMES[i]: {"pids": [p.pid]} for i, p in enumerate(self.procs)}

    def prepare(self, *, streams: int, idle: bool, logdir: Path, tag: str) -> dict:
        out = self.workdir / f"prepare-{tag}.json"
        users = max(1, streams // 20) if idle else streams
        cmd = [PY, "-m", "bench.chatsite_setup", "--users", str(users)]
        cmd += ["--conversations", str(streams), "--out", str(out)]
        if idle:
            cmd.append("--stream-tokens")
        run_checked(cmd, env=self.env(), logdir=logdir, name=f"{self.name}-prepare", timeout=600)
        return json.loads(out.read_text())

    def backing_procs(self) -> dict[str, dict] | None:
        if not self.postgres:
            return None
        # PostgreSQL backends of the bench database ("postgres: 15/main: postgres
        # chatsite_bench 127.0.0.1(…) idle"; they come and go, see loadgen's
        # `backing_pids`), and the Redis server ("redis-server 127.0.0.1:6379").
        # Matched as whole words of the command line.
        redis = urllib.parse.urlsplit(REDIS_URL)
        return {
            "postgres": {"match": [PG_DB], "children": False},
            "redis": {"match": [f"redis-server {redis.hostname}:{redis.port}"], "children": False},
        }

    def redis_url(self) -> str | None:
        return REDIS_URL if self.postgres else None

    def db_counters(self) -> dict | None:
        counts: dict = {}
        for path in self.counts_files:  # one per process: summed
            with contextlib.suppress(ValueError, OSError):
                for key, value in json.loads(path.read_text()).items():
                    counts[key] = counts.get(key, 0) + value
        if self.postgres:
            try:
                counts.update(_pg_stats())
            except Exception as exc:  # e.g. "too many clients" while the server holds them
                counts["pg_error"] = str(exc)[:200]
        return counts

    def read_gauges(self) -> list[dict | None]:
        """The latest gauges of each process (None: not written yet)."""
        gauges = []
        for path in self.gauge_files:
            try:
                gauges.append(json.loads(path.read_text()))
            except (ValueError, OSError):
                gauges.append(None)
        return gauges

    def versions(self) -> dict[str, str]:
        import daphne
        import django

        v = {"django": django.get_version()}
        if self.server == "uvicorn":
            import uvicorn

            v["uvicorn"] = uvicorn.__version__
        else:
            v["daphne"] = daphne.__version__
        if self.postgres:
            v["postgresql"] = _pg_version()
            v["redis"] = _redis_version()
        else:
            import sqlite3

            v["sqlite"] = sqlite3.sqlite_version
        return v


class StarletteRelay(System):
    def start(self, upstream_url: str, logdir: Path) -> None:
        port = free_port()
        env = dict(os.environ, BENCH_UPSTREAM_URL=upstream_url)
        cmd = [PY, "-m", "uvicorn", "bench.peers.starlette_relay:app"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        cmd += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
        cmd += ["--timeout-graceful-shutdown", "2"]
        self.proc = spawn(self.name, cmd, core=SUT_CORE, env=env, logdir=logdir)
        self.base_url = f"http://127.0.0.1:{port}"
        wait_http(self.base_url + "/health", {200}, self.proc)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        names = ("uvicorn", "sse-starlette", "starlette", "httpx", "uvloop", "httptools")
        return {n: version(n) for n in names}


class NodeRelay(System):
    def start(self, upstream_url: str, logdir: Path) -> None:
        port = free_port()
        cmd = ["node", str(ROOT / "bench/peers/node_relay.js"), "--port", str(port)]
        cmd += ["--upstream", upstream_url]
        self.proc = spawn(self.name, cmd, core=SUT_CORE, env=dict(os.environ), logdir=logdir)
        self.base_url = f"http://127.0.0.1:{port}"
        wait_http(self.base_url + "/health", {200}, self.proc)

    def versions(self) -> dict[str, str]:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10)
        return {"node": out.stdout.strip()}


def all_systems() -> dict[str, System]:
    systems: list[System] = [
        Chatsite("chatsite-sqlite", "chatsite (daphne, SQLite)", postgres=False),
        Chatsite("chatsite-pg", "chatsite (daphne, PostgreSQL + Redis)", postgres=True),
        Chatsite(
            "chatsite-uvicorn", "chatsite (uvicorn, SQLite)", postgres=False, server="uvicorn"
        ),
        Chatsite(
            "chatsite-pg-uvicorn",
            "chatsite (uvicorn, PostgreSQL + Redis)",
            postgres=True,
            server="uvicorn",
        ),
        Chatsite(
            "chatsite-pg-2proc",
            "chatsite (uvicorn x2, PostgreSQL + Redis, answer on A, watched on B)",
            postgres=True,
            server="uvicorn",
            processes=2,
        ),
        StarletteRelay("starlette", "peer: sse-starlette on uvicorn", kind="peer"),
        NodeRelay("node", "peer: Node http", kind="peer"),
    ]
    return {s.name: s for s in systems}


# ------------------------------------------------------------------ PostgreSQL, Redis


def _psycopg(dbname: str):
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", user="postgres", dbname=dbname, autocommit=True, connect_timeout=5
    )


def _ensure_pg_database() -> None:
    from psycopg import sql

    with _psycopg("postgres") as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_DB]).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DB)))


def _pg_stats() -> dict:
    """Row writes and commits of the bench database, as PostgreSQL counts them."""
    with _psycopg("postgres") as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = %s",
            [PG_DB],
        ).fetchone()
    if row is None:
        return {}
    commits, ins, upd, dele = row
    return {"pg_xact_commit": commits, "pg_tup_written": ins + upd + dele}


def _pg_version() -> str:
    with _psycopg("postgres") as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def _redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=5)


def _redis_flush() -> None:
    _redis_client().flushdb()


def _redis_version() -> str:
    return _redis_client().info("server")["redis_version"]


def redis_stats_client(url: str):
    """A client that sends nothing but what it is asked (no SELECT: `INFO` is
    server-wide anyway; no CLIENT SETINFO on connect), so that between two readings of
    `redis_commandstats` the harness itself adds only its `info` calls, which are
    dropped."""
    import redis

    parts = urllib.parse.urlsplit(url)
    return redis.Redis(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        socket_timeout=5,
        lib_name=None,
        lib_version=None,
    )


def redis_commandstats(client) -> dict[str, dict[str, int]] | None:
    """{command: {"calls", "usec"}} from `INFO commandstats` (server-wide, commands run
    inside Lua scripts included), without `info` (the harness's own readings); None if
    Redis could not be read."""
    try:
        raw = client.info("commandstats")
    except Exception:
        return None
    stats = {}
    for key, value in raw.items():
        name = key.removeprefix("cmdstat_")
        if name != "info" and isinstance(value, dict):
            stats[name] = {"calls": int(value.get("calls", 0)), "usec": int(value.get("usec", 0))}
    return stats


def redis_per_token(before: dict | None, after: dict | None, tokens: int, top: int = 8) -> dict:
    """Redis commands between two `redis_commandstats` readings per delivered token:
    the total, its server time (µs), and the `top` commands by calls."""
    if before is None or after is None:
        return {"error": "could not read INFO commandstats"}
    calls = {c: v["calls"] - before.get(c, {}).get("calls", 0) for c, v in after.items()}
    usec = sum(v["usec"] - before.get(c, {}).get("usec", 0) for c, v in after.items())
    # A CONFIG RESETSTAT in between (commandstats are server-wide: someone else's)
    # makes counters go back; such a reading is no figure.
    if any(n < 0 for n in calls.values()) or set(before) - set(after):
        return {"error": "commandstats were reset between the readings", "tokens": tokens}
    calls = {c: n for c, n in calls.items() if n}
    total = sum(calls.values())
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    return {
        "commands": total,
        "tokens": tokens,
        "commands_per_token": total / tokens if tokens else None,
        "usec_per_token": usec / tokens if tokens else None,
        "calls": dict(ranked),
        "top_per_token": {c: n / tokens for c, n in ranked[:top]} if tokens else {},
    }


def machine_info() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
