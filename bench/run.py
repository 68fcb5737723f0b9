"""`python -m bench.run`: the whole benchmark in one command.

For every point (concurrency C, repeat r) and every system, interleaved so that drift
on a noisy machine hits every system alike:

1. start a fresh fake upstream (`chat.fake_anthropic --stamp`) on core 1 and measure
   its own time to first token (`calibrate`);
2. start the system under test on core 0 (chatsite, or a peer relay), fresh;
3. chatsite only: prepare users, fresh conversations and access tokens
   (`bench.chatsite_setup`), and read the database write counters;
4. run the load client (`bench.loadgen`) on core 1: ramp up C streams, settle,
   measure for `--duration` seconds, let answers finish (systems on Redis: Redis's
   `INFO commandstats` is read right before and right after it, and by the client
   at the window's edges);
5. read the counters again, stop the system and the upstream (process groups,
   SIGTERM then SIGKILL), whatever happened.

Then the idle-streams test (heartbeats only) at each `--idle` size, and the report:
bench/results/latest.{md,json,png}; raw per-run data under bench/results/raw/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.systems import (
    HARNESS_CORE,
    PY,
    ROOT,
    System,
    all_systems,
    machine_info,
    redis_commandstats,
    redis_per_token,
    redis_stats_client,
    spawn,
    start_upstream,
)

RESULTS = ROOT / "bench" / "results"
WARMUP = 5  # streams (one answer each) before the idle baseline is taken


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="C=50,200, 5 s windows, idle 1000")
    p.add_argument("--concurrency", help="comma-separated C values (default 100,1000,5000)")
    p.add_argument("--repeat", type=int, default=2, help="runs per point (default 2)")
    p.add_argument("--systems", default=",".join(all_systems()), help="comma-separated")
    p.add_argument("--idle", help="idle-stream sizes (default 1000,10000; quick: 1000)")
    p.add_argument("--idle-systems", help="systems for the idle test (default: all)")
    p.add_argument("--idle-hold", type=float, default=17.0, help="seconds (> 15 s heartbeat)")
    p.add_argument("--duration", type=float, help="measurement window, s (default 10; quick 5)")
    p.add_argument("--settle", type=float, default=2.0, help="s between ramp and window")
    p.add_argument("--ramp", type=int, default=10, help="streams opened per 10 ms at most")
    p.add_argument("--max-pending-opens", type=int, default=32, help="opens in flight at most")
    p.add_argument("--ramp-timeout", type=float, default=60.0, help="s to open all C streams")
    p.add_argument("--idle-ramp-timeout", type=float, default=120.0, help="s, idle test")
    p.add_argument("--message-timeout", type=float, default=20.0, help="s per answer")
    p.add_argument("--tokens", type=int, default=50, help="deltas per answer")
    p.add_argument("--tokens-per-second", type=float, default=50.0, help="per stream")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument(
        "--point-budget",
        type=float,
        default=150.0,
        help="s; a system whose point took longer (or opened < half its streams) skips larger C",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy profile of each Python system (raw/<point>.pyspy.txt; bench.profile)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.concurrency = [
        int(c) for c in (args.concurrency or ("50,200" if quick else "100,1000,5000")).split(",")
    ]
    if args.idle is None:
        args.idle = "1000" if quick else "1000,10000"
    args.idle = [int(n) for n in args.idle.split(",") if n.strip()]
    args.duration = args.duration or (5.0 if quick else 10.0)
    args.systems = [s for s in args.systems.split(",") if s]
    args.idle_systems = (
        [s for s in args.idle_systems.split(",") if s] if args.idle_systems else args.systems
    )
    return args


def loadgen(spec: dict, rawdir: Path, tag: str, timeout: float) -> dict:
    """Run the load client as its own process on the harness core; its JSON result."""
    spec_path = rawdir / f"{tag}.spec.json"
    out_path = rawdir / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec))
    proc = spawn(
        f"loadgen-{tag}",
        [PY, "-m", "bench.loadgen", str(spec_path), str(out_path)],
        core=HARNESS_CORE,
        env=None,
        logdir=rawdir / "logs",
    )
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise RuntimeError(f"load client for {tag} exceeded {timeout:.0f}s") from None
    finally:
        proc.stop()
    if proc.popen.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"load client for {tag} failed:\n{proc.tail()}")
    return json.loads(out_path.read_text())


def _per_answer(before: dict | None, after: dict | None, answers: int) -> dict:
    if not after or not answers:
        return {}
    before = before or {}
    return {
        f"{key}_per_answer": (after[key] - before.get(key, 0)) / answers
        for key in after
        if isinstance(after[key], int | float)
    }


def run_point(system: System, c: int, rep: int, mode: str, args, rawdir: Path) -> dict:
    tag = f"{system.name}-{mode}-{c}-r{rep}"
    logdir = rawdir / "logs"
    print(f"[{datetime.now(UTC):%H:%M:%S}] {tag} ...", flush=True)
    t0 = time.monotonic()
    upstream, upstream_url = start_upstream(logdir, args.tokens, args.tokens_per_second)
    try:
        calib = loadgen(
            {"mode": "calibrate", "upstream_url": upstream_url, "requests": 20},
            rawdir,
            f"{tag}-calibrate",
            timeout=60,
        )
        system.start(upstream_url, logdir)
        try:
            prep = system.prepare(streams=c + WARMUP, idle=mode == "idle", logdir=logdir, tag=tag)
            time.sleep(0.5)
            counters_before = system.db_counters()
            spec = {
                "mode": mode,
                "kind": system.kind,
                "base_url": system.base_url,
                "stream_base_url": system.stream_base_url or system.base_url,
                "concurrency": c,
                "warmup": WARMUP,
                "ramp_per_10ms": args.ramp,
                "max_pending_opens": args.max_pending_opens,
                "ramp_timeout": args.idle_ramp_timeout if mode == "idle" else args.ramp_timeout,
                "settle": args.settle,
                "duration": args.idle_hold if mode == "idle" else args.duration,
                "message_timeout": args.message_timeout,
                "expected_tokens": args.tokens,
                "tokens_per_second": args.tokens_per_second,
                "upstream_ttft": calib["upstream_ttft_ms"]["p50"] / 1000,
                "upstream_pid": upstream.pid,
                "sut_procs": system.sut_procs(),
                "raw_prefix": str(rawdir / f"{tag}.npz"),
                **prep,
            }
            if system.sut_parts():
                spec["sut_parts"] = system.sut_parts()
            if system.backing_procs():
                spec["backing_procs"] = system.backing_procs()
            redis = redis_stats_client(system.redis_url()) if system.redis_url() else None
            if redis is not None:
                spec["redis_url"] = system.redis_url()
            budget = spec["ramp_timeout"] + args.settle + spec["duration"]
            profilers = _start_profilers(system, rawdir, tag) if args.profile else []
            try:
                # Server-wide, so read right around the load (warm-up to last answer).
                redis_before = redis_commandstats(redis) if redis is not None else None
                result = loadgen(spec, rawdir, tag, timeout=budget + args.message_timeout + 60)
                redis_after = redis_commandstats(redis) if redis is not None else None
            finally:
                for profiler in profilers:
                    _stop_profiler(profiler)
            if redis is not None:
                redis.close()
                tokens = result.get("tokens_total", 0)
                tokens += result.get("warmup", {}).get("tokens_total", 0)
                whole = redis_per_token(redis_before, redis_after, tokens)
                result.setdefault("redis", {})["whole_load"] = whole | {
                    "bracket": "warm-up, ramp, window and drain (every token received)"
                }
            time.sleep(1.0)  # the server's counter file is rewritten every 0.25 s
            counters_mid = system.db_counters()
        finally:
            system.stop()
        time.sleep(0.5)
        counters_after = system.db_counters()  # PostgreSQL flushed its stats at disconnect
        if counters_after and counters_mid:
            counters_after.update({k: v for k, v in counters_mid.items() if not k.startswith("pg")})
        # The warm-up's answers happened between the two readings too.
        warm = result.get("warmup", {})
        answers = result.get("answers_accepted", 0) + warm.get("answers_accepted", 0)
        if system.kind != "chatsite":
            answers = result.get("answers_sent", 0) + warm.get("answers_sent", 0)
        result["db"] = _per_answer(counters_before, counters_after, answers)
    finally:
        upstream.stop()
    result.update(
        {
            "system": system.name,
            "repeat": rep,
            "upstream_calibration": calib["upstream_ttft_ms"],
            "point_seconds": time.monotonic() - t0,
        }
    )
    (rawdir / f"{tag}.summary.json").write_text(json.dumps(result, indent=1))
    _print_summary(tag, result)
    return result


def _start_profilers(system: System, rawdir: Path, tag: str) -> list:
    """py-spy (sampling, non-blocking, collapsed stacks) on each process of the system
    (`<tag>.pyspy.txt`, or `<tag>-A.pyspy.txt`, `-B` for a two-process one), ramp to end."""
    pyspy = shutil.which("py-spy", path=f"{Path(PY).parent}:{os.environ.get('PATH', '')}")
    if system.proc is None or system.name == "node" or pyspy is None:
        return []
    parts = system.sut_parts() or {"": {"pids": [system.proc.pid]}}
    profilers = []
    for part, procs in parts.items():
        name = f"{tag}-{part}" if part else tag
        cmd = [pyspy, "record", "--pid", str(procs["pids"][0]), "--rate", "100", "--gil"]
        cmd += ["--nonblocking", "--format", "raw", "--output", str(rawdir / f"{name}.pyspy.txt")]
        logdir = rawdir / "logs"
        profilers.append(spawn(f"py-spy-{name}", cmd, core=HARNESS_CORE, env=None, logdir=logdir))
    return profilers


def _stop_profiler(proc) -> None:
    # py-spy writes its output on SIGINT.
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(20)
    proc.stop()


def _print_summary(tag: str, r: dict) -> None:
    lat = r.get("latency_ms", {})
    ttft = r.get("ttft_overhead_ms", {})

    def f(v, spec=".1f"):
        return "—" if v is None else format(v, spec)

    if r["mode"] == "idle":
        print(
            f"    held {r['opened']}/{r['concurrency']}  rss/stream {f(r['rss_per_stream_kb'])} KB"
            f"  heartbeats {r['heartbeats']}  errors {r['error_count']}"
            f"  ({r['point_seconds']:.0f}s)",
            flush=True,
        )
        return
    print(
        f"    latency p50 {f(lat.get('p50'))} p99 {f(lat.get('p99'))} max {f(lat.get('max'))} ms"
        f"  ttft+ p50 {f(ttft.get('p50'))} ms  {r['tokens_per_second']:.0f} tok/s"
        f"  cpu/1k {f(r['sut_cpu_per_1k_tokens'], '.3f')} s"
        f"  rss/stream {f(r['rss_per_stream_kb'])} KB  writes/answer"
        f" {f(r['db'].get('writes_per_answer'), '.2f')}  errors {r['error_count']}"
        f"  core1 {r['core1_utilisation']:.0%}  ({r['point_seconds']:.0f}s)",
        flush=True,
    )
    delivered = r.get("delivered_fraction")
    more = [
        f"offered {f(r.get('offered_tokens_per_second'), '.0f')} tok/s,"
        f" delivered {'—' if delivered is None else format(delivered, '.0%')}",
        f"refused {r.get('refused', 0)} ({r.get('refused_in_window', 0)} in window)",
    ]
    redis = r.get("redis")
    if redis:
        top = ", ".join(f"{c} {n:.2f}" for c, n in redis.get("top_per_token", {}).items())
        more.append(
            f"redis {f(redis.get('commands_per_token'), '.2f')} cmds/token"
            + (f" ({top})" if top else "")
            + (f" [{redis['error']}]" if "error" in redis else "")
        )
    if "postgres_cpu_per_1k_tokens" in r or "redis_cpu_per_1k_tokens" in r:
        more.append(
            f"backing cpu/1k: PostgreSQL {f(r.get('postgres_cpu_per_1k_tokens'), '.3f')} s,"
            f" Redis {f(r.get('redis_cpu_per_1k_tokens'), '.3f')} s"
        )
    if r.get("sut_cpu_by_process"):
        parts = r["sut_cpu_by_process"].items()
        more.append(
            "cpu/1k by process: "
            + ", ".join(f"{p} {f(v['per_1k_tokens'], '.3f')} s" for p, v in parts)
        )
    print("    " + "  ".join(more), flush=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM too: run every `finally`, stop everything


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    command = "python -m bench.run" + ("" if not argv else " " + shlex.join(argv))
    systems = all_systems()
    unknown = set(args.systems + args.idle_systems) - set(systems)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    started = datetime.now(UTC)
    out = Path(args.out)
    rawdir = out / "raw" / started.strftime("%Y%m%dT%H%M%SZ")
    (rawdir / "logs").mkdir(parents=True, exist_ok=True)
    print(f"bench: raw data in {rawdir}", flush=True)

    used = [systems[n] for n in dict.fromkeys(args.systems + args.idle_systems)]
    results: list[dict] = []
    skipped: list[str] = []
    meta = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {},
        "settings": {
            k: getattr(args, k)
            for k in ("concurrency", "repeat", "duration", "settle", "ramp", "idle", "idle_hold")
        }
        | {
            "max_pending_opens": args.max_pending_opens,
            "tokens": args.tokens,
            "tokens_per_second": args.tokens_per_second,
        },
        "labels": {s.name: s.label for s in used},
        "rawdir": str(rawdir),
    }
    try:
        for system in used:
            system.setup(rawdir / "logs")
            meta["versions"][system.name] = system.versions()
        too_slow: dict[str, int] = {}  # system -> the C at which it gave up
        for c in args.concurrency:
            for rep in range(1, args.repeat + 1):
                for name in args.systems:
                    if name in too_slow and c > too_slow[name]:
                        skipped.append(f"{name} load C={c} run {rep}")
                        continue
                    res = _guarded(systems[name], c, rep, "load", args, rawdir)
                    results.append(res)
                    # Larger C would only take longer and show the same collapse.
                    slow = res.get("point_seconds", 0) > args.point_budget
                    if slow or res.get("opened", c) < c / 2:  # could not open half the streams
                        too_slow.setdefault(name, c)
        for n in args.idle:
            for name in args.idle_systems:
                results.append(_guarded(systems[name], n, 1, "idle", args, rawdir))
    except KeyboardInterrupt:
        print("bench: interrupted; writing what was measured", flush=True)
    finally:
        for system in used:
            system.stop()
            system.teardown()
        meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["skipped"] = skipped
        (rawdir / "meta.json").write_text(json.dumps(meta, indent=1))
        (rawdir / "results.json").write_text(json.dumps(results, indent=1))
        if results:
            paths = report.write(results, meta, out)
            print("\n" + paths["markdown_text"])
            print(f"bench: wrote {paths['md']}, {paths['json']}, {paths['png']}")
        print(f"bench: reproduce with: {command}", flush=True)


def _guarded(system: System, c: int, rep: int, mode: str, args, rawdir: Path) -> dict:
    """One point; a failure is recorded (and reported), not fatal to the run."""
    try:
        return run_point(system, c, rep, mode, args, rawdir)
    except Exception as exc:
        print(f"    FAILED: {exc}", flush=True)
        system.stop()
        return {
            "system": system.name,
            "mode": mode,
            "concurrency": c,
            "repeat": rep,
            "failed": str(exc)[:2000],
        }


if __name__ == "__main__":
    main()
