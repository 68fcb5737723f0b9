"""Turn per-run results into bench/results/latest.{md,json,png}.

`python -m bench.report RAWDIR [OUTDIR]` re-renders a finished run from its raw
directory (meta.json + results.json), e.g. after changing this module.

Every figure is shown as `median (run 1, run 2, …)`; ratios and target checks use the
medians. Ratios are chatsite ÷ peer at the same C in the same benchmark run (so
for latency, CPU and memory, < 1 means chatsite is better; for tokens/s, > 1).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

PEERS = ("starlette", "node")
HARNESS_BOUND = 0.85  # harness core utilisation above which a point is marked


def _get(path: str) -> Callable[[dict], float | None]:
    def get(r: dict):
        v = r
        for key in path.split("."):
            if not isinstance(v, dict):
                return None
            v = v.get(key)
        return v

    return get


def _answer_message_writes(result: dict):
    """Writes to the answer's own row per answer: its INSERT (one of the send's two
    message INSERTs; the other is the user's message) and every UPDATE of a message
    (checkpoints, the final save, lease renewals: all are of answers)."""
    db = result.get("db") or {}
    inserts = db.get('INSERT INTO "chat_message"_per_answer')
    if inserts is None:
        return None
    return inserts / 2 + db.get('UPDATE "chat_message"_per_answer', 0.0)


def _offered(result: dict):
    """C x tokens/s per stream (older results call it `expected_tokens_per_second`)."""
    return result.get("offered_tokens_per_second") or result.get("expected_tokens_per_second")


def _delivered(result: dict):
    """Delivered tokens/s ÷ offered."""
    if result.get("delivered_fraction") is not None:
        return result["delivered_fraction"]
    offered, tps = _offered(result), result.get("tokens_per_second")
    return tps / offered if offered and tps is not None else None


# (key, column title, getter)
LOAD_METRICS = [
    ("lat_p50", "latency p50 ms", _get("latency_ms.p50")),
    ("lat_p99", "latency p99 ms", _get("latency_ms.p99")),
    ("lat_max", "latency max ms", _get("latency_ms.max")),
    ("ttft_p50", "TTFT overhead p50 ms", _get("ttft_overhead_ms.p50")),
    ("ttft_p99", "TTFT overhead p99 ms", _get("ttft_overhead_ms.p99")),
    ("tok_s", "tokens/s", _get("tokens_per_second")),
    ("offered", "offered tokens/s", _offered),
    ("delivered", "delivered (of offered)", _delivered),
    ("cpu_1k", "CPU s / 1k tokens", _get("sut_cpu_per_1k_tokens")),
    ("rss_kb", "RSS KB / stream", _get("rss_per_stream_kb")),
    ("writes", "DB writes / answer", _get("db.writes_per_answer")),
    ("answer_writes", "of which the answer's row", _answer_message_writes),
    ("redis_cmds", "Redis cmds / token", _get("redis.commands_per_token")),
    ("errors", "errors", _get("error_count")),
    ("refused", "refused", _get("refused")),
    ("core1", "harness core busy", _get("core1_utilisation")),
]
EXTRA_LOAD = [
    ("opened", "streams opened (of C)", _get("opened")),
    ("pg_rows", "PG rows written / answer", _get("db.pg_tup_written_per_answer")),
    ("pg_commits", "PG commits / answer", _get("db.pg_xact_commit_per_answer")),
    ("pg_cpu_1k", "PostgreSQL CPU s / 1k tokens", _get("postgres_cpu_per_1k_tokens")),
    ("redis_cpu_1k", "Redis CPU s / 1k tokens", _get("redis_cpu_per_1k_tokens")),
    ("redis_us", "Redis command µs / token", _get("redis.usec_per_token")),
    ("cpu_1k_A", "process A CPU s / 1k tokens", _get("sut_cpu_by_process.A.per_1k_tokens")),
    ("cpu_1k_B", "process B CPU s / 1k tokens", _get("sut_cpu_by_process.B.per_1k_tokens")),
    ("open_p50", "stream open p50 ms", _get("open_ms.p50")),
    ("answer_ms", "answer streaming mean ms", _get("answer_streaming_ms.mean")),
    ("threads", "server threads (max)", _get("sut_threads.max")),
]
IDLE_METRICS = [
    ("held", "streams held", _get("opened")),
    ("rss_kb", "RSS KB / stream", _get("rss_per_stream_kb")),
    ("rss_mb", "RSS MB (idle → open)", None),
    ("heartbeat", "held streams with a heartbeat", _get("streams_with_heartbeat")),
    ("ramp_s", "seconds to open all", _get("ramp_seconds")),
    ("threads", "server threads (max)", _get("sut_threads.max")),
    ("errors", "errors", _get("error_count")),
]
RATIO_METRICS = ["lat_p50", "lat_p99", "ttft_p50", "tok_s", "cpu_1k", "rss_kb"]


def fmt(v) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(results: list[dict]) -> dict:
    """{(system, mode, C): {"runs": [...], "failed": n, "median": {key: v}, "values": {...}}}"""
    groups: dict[tuple, dict] = defaultdict(lambda: {"runs": [], "failed": 0})
    for r in results:
        g = groups[(r["system"], r["mode"], r["concurrency"])]
        if "failed" in r:
            g["failed"] += 1
            g.setdefault("failures", []).append(r["failed"])
        else:
            g["runs"].append(r)
    for (_, mode, _), g in groups.items():
        metrics = LOAD_METRICS + EXTRA_LOAD if mode == "load" else IDLE_METRICS
        g["values"] = {}
        g["median"] = {}
        for key, _, get in metrics:
            if get is None:
                continue
            vals = [get(r) for r in g["runs"]]
            g["values"][key] = vals
            g["median"][key] = _median(vals)
    return groups


def _cell(g: dict, key: str) -> str:
    vals = g["values"].get(key, [])
    med = g["median"].get(key)
    if all(v is None for v in vals):
        return "—"
    if key == "core1":
        pct = [None if v is None else f"{v:.0%}" for v in vals]
        return " / ".join(p or "—" for p in pct)
    if key == "delivered":
        pct = [None if v is None else f"{v:.0%}" for v in [med, *vals]]
        if len(vals) <= 1:
            return pct[0] or "—"
        return f"{pct[0] or '—'} ({', '.join(p or '—' for p in pct[1:])})"
    if len(vals) <= 1:
        return fmt(med)
    return f"{fmt(med)} ({', '.join(fmt(v) for v in vals)})"


def ratios(groups: dict) -> dict:
    """{(chatsite system, C): {metric: {peer: ratio}}} for load points."""
    out: dict = {}
    for (system, mode, c), g in groups.items():
        if mode != "load" or not system.startswith("chatsite"):
            continue
        row: dict = {}
        for key in RATIO_METRICS:
            row[key] = {}
            for peer in PEERS:
                p = groups.get((peer, "load", c))
                a, b = g["median"].get(key), p["median"].get(key) if p else None
                row[key][peer] = (a / b) if a is not None and b else None
        out[(system, c)] = row
    for (system, mode, n), g in groups.items():
        if mode != "idle" or not system.startswith("chatsite"):
            continue
        row = {"rss_kb": {}}
        for peer in PEERS:
            p = groups.get((peer, "idle", n))
            a, b = g["median"].get("rss_kb"), p["median"].get("rss_kb") if p else None
            row["rss_kb"][peer] = (a / b) if a is not None and b else None
        out[(system, f"idle {n}")] = row
    return out


def targets(groups: dict, meta: dict) -> list[dict]:
    """The issue's targets, checked for each chatsite system on the medians."""
    answer_seconds = meta["settings"]["tokens"] / meta["settings"]["tokens_per_second"]
    max_writes = 2 + answer_seconds / 0.5
    rows = []
    order = list(meta["labels"])
    systems = sorted(
        {s for (s, _, _) in groups if s.startswith("chatsite")},
        key=lambda s: order.index(s) if s in order else len(order),
    )
    load_cs = sorted({c for (_, m, c) in groups if m == "load"})

    def med(system, mode, c, key):
        g = groups.get((system, mode, c))
        return g["median"].get(key) if g else None

    def sustained(system):
        """Best tokens/s among points with p99 ≤ 100 ms (0 if none; None if not run)."""
        best = None
        for c in load_cs:
            p99, tps = med(system, "load", c, "lat_p99"), med(system, "load", c, "tok_s")
            if (system, "load", c) in groups:
                best = best or 0.0
            if p99 is not None and p99 <= 100 and tps is not None:
                best = max(best, tps)
        return best

    for s in systems:
        cpu = [
            (c, med(s, "load", c, "cpu_1k"), med("starlette", "load", c, "cpu_1k")) for c in load_cs
        ]
        cpu_ratios = [(c, a / b) for c, a, b in cpu if a is not None and b]
        worst = max((r for _, r in cpu_ratios), default=None)
        rows.append(
            {
                "system": s,
                "target": "CPU per delivered token ≤ 0.5 x sse-starlette's",
                "measured": ", ".join(f"C={c}: {r:.2f}x" for c, r in cpu_ratios) or "—",
                "ok": None if worst is None else worst <= 0.5,
            }
        )
        p99 = med(s, "load", 100, "lat_p99")
        rows.append(
            {
                "system": s,
                "target": "relay latency p99 ≤ 5 ms at 100 streams",
                "measured": "not measured (C=100 not run)" if p99 is None else f"{p99:.1f} ms",
                "ok": None if p99 is None else p99 <= 5,
            }
        )
        mine, theirs = sustained(s), sustained("starlette")
        rows.append(
            {
                "system": s,
                "target": "tokens/s sustained at p99 ≤ 100 ms ≥ 2 x sse-starlette's",
                "measured": f"{fmt(mine)} vs {fmt(theirs)} tok/s"
                + (f" ({mine / theirs:.2f}x)" if mine and theirs else "")
                + " (best measured C)",
                "ok": None if mine is None or not theirs else mine >= 2 * theirs,
            }
        )
        held, kb = med(s, "idle", 10_000, "held"), med(s, "idle", 10_000, "rss_kb")
        rows.append(
            {
                "system": s,
                "target": "10,000 idle streams per process at ≤ 20 KB RSS each",
                "measured": "not measured (idle 10,000 not run)"
                if held is None
                else f"{held:.0f} held, {fmt(kb)} KB each",
                "ok": None if held is None else held >= 10_000 and kb is not None and kb <= 20,
            }
        )
        ttft = med(s, "load", 100, "ttft_p50")
        rows.append(
            {
                "system": s,
                "target": "TTFT overhead p50 ≤ 10 ms at 100 streams",
                "measured": "not measured (C=100 not run)" if ttft is None else f"{ttft:.1f} ms",
                "ok": None if ttft is None else ttft <= 10,
            }
        )
        # Per message: the answer's own row (the send's other writes, the user's
        # message and the conversation's `updated_at`, are one each and listed in
        # the table). The allowance grows with how long answers actually streamed.
        checks = []
        for c in load_cs:
            w, ms = med(s, "load", c, "answer_writes"), med(s, "load", c, "answer_ms")
            if w is not None:
                allowed = 2 + (ms / 1000 if ms else answer_seconds) / 0.5
                checks.append((c, w, allowed))
        rows.append(
            {
                "system": s,
                "target": "DB writes per message (the answer's row) ≤ 2 + 1 per 0.5 s "
                "of streaming "
                f"(nominal answer {answer_seconds:g} s → {max_writes:g})",
                "measured": ", ".join(f"C={c}: {w:.2f} (allowed {a:.1f})" for c, w, a in checks)
                or "—",
                "ok": None if not checks else all(w <= a for _, w, a in checks),
            }
        )
    return rows


def markdown(groups: dict, meta: dict) -> str:
    labels = meta["labels"]
    m = meta["machine"]
    lines = [
        "# chatsite benchmark",
        "",
        f"- date: {meta['started']} → {meta.get('finished', '')} (UTC)",
        f"- machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory']}, Linux {m['kernel']},"
        f" Python {m['python']}",
        "- versions: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in vs.items())
            for name, vs in meta["versions"].items()
        ),
        f"- command: `{meta['command']}`",
        f"- settings: {json.dumps(meta['settings'])}",
        "- each system under test on core 0 (one process; `chatsite-pg-2proc`: both its"
        " processes), fake upstream + load client on core 1; cells are `median (run 1, run 2)`;"
        " see bench/README.md for what each figure means.",
    ]
    if meta.get("skipped"):
        lines.append(
            "- skipped (at a smaller C the system took longer than the point budget or"
            f" opened fewer than half its streams): {', '.join(meta['skipped'])}"
        )
    st = meta["settings"]
    lines += [
        "",
        f"## Streams under load ({st['tokens']:g}-token answers at {st['tokens_per_second']:g}"
        " tokens/s per stream)",
        "",
    ]
    cols = LOAD_METRICS
    lines.append("| system | C | " + " | ".join(t for _, t, _ in cols) + " |")
    lines.append("|---|---:|" + "---:|" * len(cols))
    load_keys = sorted(
        (k for k in groups if k[1] == "load"), key=lambda k: (k[2], list(labels).index(k[0]))
    )
    for key in load_keys:
        g = groups[key]
        cells = [_cell(g, k) for k, _, _ in cols]
        if g["failed"]:
            cells[-1] += f" ({g['failed']} failed)"
        bound = (g["median"].get("core1") or 0) >= HARNESS_BOUND
        c = f"{key[2]}{' †' if bound else ''}"
        lines.append(f"| {labels.get(key[0], key[0])} | {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"† the harness core (fake upstream + load client) was ≥ {HARNESS_BOUND:.0%} busy: the"
        " figures at this point are limited by the harness, not only by the system under test.",
    ]

    extra = [(k, t) for k, t, _ in EXTRA_LOAD]
    lines += ["", "More per-point figures (medians):", ""]
    lines.append("| system | C | " + " | ".join(t for _, t in extra) + " |")
    lines.append("|---|---:|" + "---:|" * len(extra))
    for key in load_keys:
        g = groups[key]
        lines.append(
            f"| {labels.get(key[0], key[0])} | {key[2]} | "
            + " | ".join(fmt(g["median"].get(k)) for k, _ in extra)
            + " |"
        )

    lines += [
        "",
        "CPU s / 1k tokens is the system's own processes only; PostgreSQL (backends of the"
        " bench database) and Redis (the server) are the two columns above, measured in the"
        " same window. Redis cmds / token: `INFO commandstats` calls (all commands, those"
        " run inside Lua scripts included) in the window ÷ tokens delivered in it.",
    ]
    redis_rows = _redis_commands(groups, load_keys, labels)
    if redis_rows:
        lines += ["", "Redis commands per delivered token, by command (medians):", ""]
        lines += redis_rows

    rat = ratios(groups)
    if rat:
        lines += [
            "",
            "## chatsite as a ratio to the peers (same C, same run; vs sse-starlette / vs Node)",
            "",
        ]
        titles = {k: t for k, t, _ in LOAD_METRICS}
        lines.append("| system | C | " + " | ".join(titles[k] for k in RATIO_METRICS) + " |")
        lines.append("|---|---:|" + "---:|" * len(RATIO_METRICS))
        for (system, c), row in rat.items():
            cells = []
            for k in RATIO_METRICS:
                if k not in row:
                    cells.append("")
                    continue
                vals = [row[k].get(p) for p in PEERS]
                cells.append(" / ".join("—" if v is None else f"{v:.2f}x" for v in vals))
            lines.append(f"| {labels.get(system, system)} | {c} | " + " | ".join(cells) + " |")

    idle_keys = sorted(
        (k for k in groups if k[1] == "idle"), key=lambda k: (k[2], list(labels).index(k[0]))
    )
    if idle_keys:
        lines += ["", "## Idle streams (heartbeats only), one process", ""]
        lines.append(
            "| system | streams | held | RSS KB / stream | RSS MB idle → open |"
            " held with a heartbeat | s to open | server threads | errors |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key in idle_keys:
            g = groups[key]
            r = g["runs"][0] if g["runs"] else {}
            rss = f"{r['rss_idle_mb']:.0f} → {r['rss_open_mb']:.0f}" if r else "—"
            med = g["median"]
            fail = f" ({g['failed']} failed)" if g["failed"] else ""
            lines.append(
                f"| {labels.get(key[0], key[0])} | {key[2]} | {fmt(med.get('held'))} |"
                f" {fmt(med.get('rss_kb'))} | {rss} | {fmt(med.get('heartbeat'))} |"
                f" {fmt(med.get('ramp_s'))} | {fmt(med.get('threads'))} |"
                f" {fmt(med.get('errors'))}{fail} |"
            )

    tg = targets(groups, meta)
    if tg:
        lines += ["", "## Targets (issue 5)", "", "| system | target | measured | met |"]
        lines.append("|---|---|---|---|")
        for t in tg:
            ok = {True: "yes", False: "**no**", None: "n/a"}[t["ok"]]
            name = labels.get(t["system"], t["system"])
            lines.append(f"| {name} | {t['target']} | {t['measured']} | {ok} |")
    failures = [(k, f) for k, g in groups.items() for f in g.get("failures", [])]
    if failures:
        lines += ["", "## Failed points", ""]
        for (s, mode, c), f in failures:
            lines.append(f"- {s} {mode} C={c}: `{f.splitlines()[0][:300]}`")
    lines += ["", f"Reproduce: `{meta['command']}`", ""]
    return "\n".join(lines)


def _redis_commands(groups: dict, load_keys: list, labels: dict, top: int = 8) -> list[str]:
    """One line per Redis point: its top commands per token, median over runs (a
    command missing from a run's top counts 0), and the figure over the whole load."""
    lines = []
    for key in load_keys:
        runs = [r["redis"] for r in groups[key]["runs"] if r.get("redis", {}).get("tokens")]
        if not runs:
            continue
        names = {c for r in runs for c in r.get("top_per_token", {})}
        per = {
            c: statistics.median(r.get("top_per_token", {}).get(c, 0.0) for r in runs)
            for c in names
        }
        ranked = sorted(per.items(), key=lambda kv: -kv[1])[:top]
        whole = _median([(r.get("whole_load") or {}).get("commands_per_token") for r in runs])
        lines.append(
            f"- {labels.get(key[0], key[0])}, C={key[2]}: "
            + ", ".join(f"{c} {fmt(n)}" for c, n in ranked)
            + f" (all commands over the whole load, ramp and warm-up included: {fmt(whole)})"
        )
    return lines


def plot(groups: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = meta["labels"]
    colors = {
        "chatsite-sqlite": "C0",
        "chatsite-pg": "C1",
        "starlette": "C2",
        "node": "C3",
        "chatsite-uvicorn": "C4",
        "chatsite-pg-uvicorn": "C5",
        "chatsite-pg-2proc": "C6",
    }
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_lat, ax_tps), (ax_cpu, ax_rss) = axes
    systems = list(labels)
    for s in systems:
        pts = sorted(
            (c, g) for (name, mode, c), g in groups.items() if name == s and mode == "load"
        )
        if not pts:
            continue
        cs = [c for c, _ in pts]
        color = colors.get(s)

        def series(key, pts=pts):
            return [g["median"].get(key) for _, g in pts]

        def draw(ax, key, style="-o", label=None, cs=cs, color=color, series=series):
            ys = series(key)
            # Log axes cannot show 0 (a system that delivered nothing): leave it out.
            xy = [(x, y) for x, y in zip(cs, ys, strict=True) if y is not None and y > 0]
            if xy:
                ax.plot(*zip(*xy, strict=True), style, color=color, label=label)

        draw(ax_lat, "lat_p50", "-o", f"{labels[s]} p50")
        draw(ax_lat, "lat_p99", "--^", f"{labels[s]} p99")
        draw(ax_tps, "tok_s", "-o", labels[s])
        draw(ax_cpu, "cpu_1k", "-o", labels[s])
        draw(ax_rss, "rss_kb", "-o", f"{labels[s]} (under load)")
        idle = sorted(
            (c, g) for (name, mode, c), g in groups.items() if name == s and mode == "idle"
        )
        xy = [(c, g["median"].get("rss_kb")) for c, g in idle if g["median"].get("rss_kb")]
        if xy:
            ax_rss.plot(*zip(*xy, strict=True), ":s", color=color, label=f"{labels[s]} (idle)")
    all_c = sorted({c for (_, m, c) in groups if m == "load"})
    if all_c:
        offered = [c * meta["settings"]["tokens_per_second"] for c in all_c]
        ax_tps.plot(all_c, offered, ":", color="grey", label="offered (C x tokens/s)")
    ax_lat.set(title="Relay latency (upstream send → client receive)", ylabel="ms")
    ax_tps.set(title="Delivered tokens/s", ylabel="tokens/s")
    ax_cpu.set(title="CPU seconds per 1,000 delivered tokens (system under test)", ylabel="s")
    ax_rss.set(title="RSS per open stream", ylabel="KB")
    idle_n = sorted({c for (_, m, c) in groups if m == "idle"})
    for ax in axes.flat:
        ax.set_xscale("log")
        ticks = sorted(set(all_c) | (set(idle_n) if ax is ax_rss else set()))
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("concurrent streams (C)" + (" / idle streams" if ax is ax_rss else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_lat.set_yscale("log")
    ax_tps.set_yscale("log")
    ax_cpu.set_yscale("log")
    fig.suptitle(
        f"chatsite vs peers, each on one core, {meta['started']}\n{meta['command']}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: list[dict], meta: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(results)
    md = markdown(groups, meta)
    paths = {"md": out / "latest.md", "json": out / "latest.json", "png": out / "latest.png"}
    paths["md"].write_text(md)
    summary = [
        {"system": s, "mode": m, "concurrency": c, "median": g["median"], "values": g["values"]}
        | ({"failed": g["failed"]} if g["failed"] else {})
        for (s, m, c), g in groups.items()
    ]
    ratio_rows = [
        {"system": s, "point": c, "ratios": row} for (s, c), row in ratios(groups).items()
    ]
    doc = {
        "meta": meta,
        "summary": summary,
        "ratios": ratio_rows,
        "targets": targets(groups, meta),
        "runs": results,
    }
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    plot(groups, meta, paths["png"])
    return {**paths, "markdown_text": md}


def main(argv: list[str]) -> None:
    rawdir = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else rawdir.parent.parent
    meta = json.loads((rawdir / "meta.json").read_text())
    results = json.loads((rawdir / "results.json").read_text())
    paths = write(results, meta, out)
    print(paths["markdown_text"])


if __name__ == "__main__":
    main(sys.argv[1:])
