"""Turn a soak (`bench.soak`) into `soak.md`, `soak.json` and `soak.png`.

`python -m bench.soak_report RAWDIR [OUTDIR]` re-renders a finished soak from its raw
directory (`soak.raw.json`), e.g. after changing this module.

"Flat" is judged by numbers: for every series, the mean of the load's first minute
against the mean of its last minute, and the slope of a least-squares line through the
load's samples, per hour, over the whole load and over its second half (after pools
and caches have filled and the replay buffer's keys have started to expire). Samples
before the load (the server up, no stream open) and after it (after the drain and a
sweep) are shown beside them.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

# (key, title, source): "server" series come from `bench.soak.Sampler`, "client" series
# from the soak client's progress lines.
SERIES = [
    ("rss_mb", "server RSS (MB)", "server"),
    ("fds", "server open file descriptors", "server"),
    ("threads", "server threads", "server"),
    ("asyncio_tasks", "server asyncio tasks", "server"),
    ("open_streams", "open streams (server)", "server"),
    ("runs", "runs (answers being generated)", "server"),
    ("active_answers", "answers pending or streaming (database)", "server"),
    ("pg_connections", "PostgreSQL connections (bench database)", "server"),
    ("redis_clients", "Redis connections (bench database number)", "server"),
    ("redis_keys", "Redis keys (bench database number)", "server"),
    ("cpu_utilisation", "server CPU (share of one core)", "server"),
    ("loop_lag_ms", "server event-loop lag (ms)", "server"),
    ("tokens_per_second", "tokens/s received (client)", "client"),
    ("latency_p50_ms", "relay latency p50 (ms, client)", "client"),
    ("latency_p99_ms", "relay latency p99 (ms, client)", "client"),
    ("open_streams_client", "open streams (client)", "client"),
]
MINUTE = 60.0


def points(result: dict, key: str, source: str) -> list[tuple[float, float]]:
    """(seconds since the load started, value) for every sample that has the key."""
    t0 = result["client"]["load_started"]
    if source == "client":
        rows = [{**p, "open_streams_client": p.get("open_streams")} for p in result["progress"]]
    else:
        rows = result["samples"]
    return [
        (row["time"] - t0, float(row[key]))
        for row in rows
        if isinstance(row.get(key), int | float) and math.isfinite(row[key])
    ]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def slope_per_hour(pts: list[tuple[float, float]]) -> float | None:
    """The least-squares slope through `pts` (seconds, value), per hour; None with
    fewer than three points."""
    if len(pts) < 3:
        return None
    xs, ys = zip(*pts, strict=True)
    try:
        return statistics.linear_regression(xs, ys).slope * 3600
    except statistics.StatisticsError:  # every x the same
        return None


def series_summary(
    pts: list[tuple[float, float]], load_seconds: float, ramp_at: float = 0.0
) -> dict:
    """Before / first minute / last minute / after means, change, slopes, range. `pts`
    are (seconds since the load started, value); the streams were opened from `ramp_at`
    (≤ 0) to 0, the load ran from 0 to `load_seconds`."""
    load = [(t, v) for t, v in pts if 0 <= t <= load_seconds]
    first = [v for t, v in load if t < MINUTE]
    last = [v for t, v in load if t >= load_seconds - MINUTE]
    before = [v for t, v in pts if t < min(0.0, ramp_at)]
    after = [v for t, v in pts if t > load_seconds]
    first_mean, last_mean = _mean(first), _mean(last)
    change = None if first_mean is None or last_mean is None else last_mean - first_mean
    values = [v for _, v in load]
    return {
        "samples": len(load),
        "before": before[-1] if before else None,
        "first_minute": first_mean,
        "last_minute": last_mean,
        "change": change,
        "change_pct": (100 * change / first_mean) if change is not None and first_mean else None,
        "slope_per_hour": slope_per_hour(load),
        "slope_per_hour_second_half": slope_per_hour(
            [(t, v) for t, v in load if t >= load_seconds / 2]
        ),
        "min": min(values, default=None),
        "max": max(values, default=None),
        "after": after[-1] if after else None,
    }


def summarise(meta: dict, result: dict) -> dict:
    client = result["client"]
    t0 = client["load_started"]
    load_seconds = client["load_stopped"] - t0
    ramp_at = client.get("ramp_started", t0) - t0
    series = {}
    for key, title, source in SERIES:
        pts = points(result, key, source)
        if pts:
            series[key] = {"title": title, "source": source} | series_summary(
                pts, load_seconds, ramp_at
            )
    counts = client.get("counts", {})
    verified = {}
    for plan in ("plain", "reconnect", "stop", "regenerate"):
        verified[plan] = {
            "answers": counts.get(f"answers_{plan}", 0),
            "verified": counts.get(f"{plan}_verified", 0),
        }
    end = result["end"]
    return {
        "load_seconds": load_seconds,
        "ramp_seconds": -ramp_at,
        "streams_opened_in_ramp": client.get("streams_opened_in_ramp"),
        "left_active": end["left_active"],
        "left_active_answers": end["left_active_answers"],
        "statuses": end["statuses"],
        "errors": client.get("errors", {}),
        "error_count": client.get("error_count", 0),
        "refused": counts.get("refused", 0),
        "verified": verified,
        "churn": {
            k: counts.get(k, 0)
            for k in (
                "sends_accepted",
                "regenerates_accepted",
                "reconnects",
                "reconnects_skipped_ended",
                "stops_confirmed",
                "stops_unconfirmed",
                "stops_too_late",
                "stops_skipped_ended",
                "conversations_started",
                "streams_opened",
            )
        },
        "series": series,
        "tasks_by_coroutine": _tasks_by_coroutine(result["samples"], t0, load_seconds, ramp_at),
    }


def _tasks_by_coroutine(
    samples: list[dict], t0: float, load_seconds: float, ramp_at: float
) -> dict:
    """The server's tasks by coroutine before the load, at its last sample, and after
    it: a task that leaks shows up here by name."""
    phases = {
        "before the load": [s for s in samples if s["time"] - t0 < ramp_at],
        "last sample of the load": [s for s in samples if 0 <= s["time"] - t0 <= load_seconds],
        "after": [s for s in samples if s["time"] - t0 > load_seconds],
    }
    return {
        when: rows[-1]["tasks_by_coroutine"]
        for when, rows in phases.items()
        if rows and "tasks_by_coroutine" in rows[-1]
    }


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 10):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def markdown(meta: dict, summary: dict) -> str:
    s = meta["settings"]
    lines = [
        f"# Soak: {meta['label']}, C = {s['concurrency']}, {s['minutes']:g} minutes",
        "",
        f"Recorded {meta['started']} to {meta.get('finished', '?')} (UTC) on"
        f" {meta['machine'].get('nproc')} cores ({meta['machine'].get('cpu_model')},"
        f" {meta['machine'].get('memory')}); versions: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        + ".",
        "",
        "```sh",
        meta["command"],
        "```",
        "",
        f"{s['concurrency']} streams (one user and conversation each; a new conversation"
        f" every {s['answers_per_conversation']} answers), answers of {s['tokens']} tokens"
        f" at {s['tokens_per_second']:g} tokens/s, {s['think']:g} s of thinking between"
        f" answers on average; {s['stop_fraction']:.0%} of answers stopped mid-stream,"
        f" {s['reconnect_fraction']:.0%} dropped mid-stream and resumed with"
        f" `Last-Event-ID` (after up to {s['reconnect_pause']:g} s), {s['regenerate_fraction']:.0%}"
        f" of finished answers regenerated. Sampled every {s['sample_every']:g} s. The"
        f" {summary['streams_opened_in_ramp']} streams opened in"
        f" {summary['ramp_seconds']:.1f} s before the load started.",
        "",
        "## Checks",
        "",
        "| check | result |",
        "|---|---|",
    ]
    left = summary["left_active"]
    lines.append(
        f"| answers left `pending` or `streaming` {s['drain']:g} s + {s['sweep_wait']:g} s"
        f" after the load | **{left}** {'✓' if left == 0 else '✗'} |"
    )
    errors = summary["errors"]
    by_kind = ", ".join(f"`{k}` {n}" for k, n in sorted(errors.items(), key=lambda kv: -kv[1]))
    lines.append(
        f"| errors (client, by kind) | **{summary['error_count']}**"
        + (f": {by_kind}" if by_kind else "")
        + " |"
    )
    for plan, label in (
        ("plain", "answers read to the end: exact"),
        ("reconnect", "answers dropped mid-stream and resumed: exact"),
        ("stop", "answers stopped: `cancelled`, text = the stored text"),
        ("regenerate", "regenerated answers: exact"),
    ):
        v = summary["verified"][plan]
        lines.append(f"| {label} | {v['verified']:,} of {v['answers']:,} |")
    lines.append(f"| sends refused with 503 (retried; not errors) | {summary['refused']:,} |")
    lines += [
        "",
        "## Series",
        "",
        "Means of the load's first and last minute, and the least-squares slope per hour over"
        " the whole load and over its second half. *Before*: the last sample before the"
        " streams opened (server up, no stream); *after*: after the drain and a sweep.",
        "",
        "| series | before | first minute | last minute | last - first | slope / h |"
        " slope / h, 2nd half | min to max | after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["series"].values():
        change = fmt(row["change"])
        if row["change_pct"] is not None:
            change += f" ({row['change_pct']:+.1f}%)"
        lines.append(
            f"| {row['title']} | {fmt(row['before'])} | {fmt(row['first_minute'])}"
            f" | {fmt(row['last_minute'])} | {change} | {fmt(row['slope_per_hour'])}"
            f" | {fmt(row['slope_per_hour_second_half'])}"
            f" | {fmt(row['min'])} to {fmt(row['max'])} | {fmt(row['after'])} |"
        )
    statuses = ", ".join(f"{k} {n:,}" for k, n in sorted(summary["statuses"].items()))
    churn = ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in summary["churn"].items())
    lines += [
        "",
        "## Answers",
        "",
        f"- In the database, answers created during the soak by status: {statuses or '—'}.",
        f"- The client: {churn}.",
    ]
    tasks = summary["tasks_by_coroutine"]
    if tasks:
        lines.append(
            "- The server's asyncio tasks by coroutine, "
            + "; ".join(
                f"{when}: " + (", ".join(f"`{k}` {n}" for k, n in kinds.items()) or "—")
                for when, kinds in tasks.items()
            )
            + "."
        )
    if summary["left_active_answers"]:
        lines.append("- Left active: " + json.dumps(summary["left_active_answers"]))
    lines += [
        "",
        "![soak plot](soak.png)",
        "",
        'How to read it: `bench/README.md` ("Soak"). Raw data: `' + meta["rawdir"] + "`.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, t, src) for k, t, src in SERIES if k in summary["series"]]
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 2.8 * rows), squeeze=False)
    load_minutes = summary["load_seconds"] / MINUTE
    for ax, (key, title, source) in zip(axes.flat, keys, strict=False):
        pts = points(result, key, source)
        xs = [t / MINUTE for t, _ in pts]
        ys = [v for _, v in pts]
        ax.axvspan(0, load_minutes, color="0.93", zorder=0)
        ax.axvline(-summary["ramp_seconds"] / MINUTE, color="0.6", linestyle=":", linewidth=1)
        ax.plot(xs, ys, ".-", linewidth=1, markersize=3)
        row = summary["series"][key]
        load = [(t, v) for t, v in pts if 0 <= t <= summary["load_seconds"]]
        if row["slope_per_hour"] is not None and len(load) >= 3:
            fit = statistics.linear_regression([t for t, _ in load], [v for _, v in load])
            ends = [load[0][0], load[-1][0]]
            ax.plot(
                [t / MINUTE for t in ends],
                [fit.intercept + fit.slope * t for t in ends],
                "--",
                color="tab:red",
                linewidth=1,
            )
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_ylim(bottom=min(0, min(ys, default=0)))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(
            "minutes since the load started (dotted: streams start opening; grey: the load)",
            fontsize=8,
        )
    fig.suptitle(
        "soak: every series over time; dashed: least-squares line over the load", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(meta: dict, result: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(meta, result)
    t0 = result["client"]["load_started"]
    md = markdown(meta, summary)
    paths = {"md": out / "soak.md", "json": out / "soak.json", "png": out / "soak.png"}
    paths["md"].write_text(md)
    paths["json"].write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "client": result["client"],
                "end": result["end"],
                # Time series: `t` is seconds since the load started.
                "samples": [{"t": s["time"] - t0, **s} for s in result["samples"]],
                "progress": [{"t": p["time"] - t0, **p} for p in result["progress"]],
            },
            indent=1,
        )
    )
    plot(result, summary, paths["png"])
    return {**paths, "markdown_text": md}


def main(argv: list[str]) -> None:
    raw = json.loads((Path(argv[0]) / "soak.raw.json").read_text())
    meta = raw.pop("meta")
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "results"
    paths = write(meta, raw, out)
    print(paths["markdown_text"])


if __name__ == "__main__":
    main(sys.argv[1:])
