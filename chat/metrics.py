"""This process's Prometheus metrics, and the small functions the run core and streams call.

Each process keeps its own metrics (prometheus_client's default registry) and serves
them at `/metrics` (chatsite/probes.py); Prometheus scrapes every process and sums.
No multiprocess mode: it only works for processes on one machine sharing a directory,
and a process's own numbers are what explains that process's behaviour.

Labels are few and bounded (a status, an error code): never a user, a conversation or
a message. The per-token path costs a plain integer increment: prometheus_client's
`Counter.inc()` takes a lock, about 1.1-1.4 µs per call against 22-50 ns for an
integer (timeit, on the shared 2-core machine), so tokens are counted in an integer
that a collector reads at scrape time. Everything else happens once per run, per
flush or per write of a stream.

Gauges of live state (open streams, active runs) are read at scrape time from the
objects that own the state, which register a function for it (`open_streams`,
`active_runs`): nothing is counted up and down, so nothing can drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

open_streams = Gauge("chatsite_open_streams", "Event streams open on this process.")
active_runs = Gauge("chatsite_active_runs", "Answers this process is generating.")
runs_started = Counter("chatsite_runs_started", "Answers whose generation started here.")
runs_ended = Counter(
    "chatsite_runs_ended",
    "Answers ended here (by their run, a stop, the sweeper or a deletion), by final status.",
    ["status"],
)
runs_interrupted = Counter(
    "chatsite_runs_interrupted",
    "Answers ended `interrupted` (some text kept), by why: server_shutdown, run_lost, "
    "upstream_*, internal_error.",
    ["reason"],
)
upstream_errors = Counter(
    "chatsite_upstream_errors",
    "Failures of the model's API, by code; retried: the provider started the stream again.",
    ["code", "retried"],
)
time_to_first_token = Histogram(
    "chatsite_time_to_first_token_seconds",
    "From a run's start to its first text from the model.",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
relay_latency = Histogram(
    "chatsite_relay_latency_seconds",
    "From a run emitting text to a stream having its frames to write, per write, for its "
    "oldest event (across processes: includes the flush wait, Redis and clock skew).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
replay_reads = Counter(
    "chatsite_replay_buffer_reads",
    "Reads of the replay buffer by streams catching up or repairing, by result (hit, miss).",
    ["result"],
)
gaps_repaired = Counter(
    "chatsite_gaps_repaired",
    "Live events a stream found missing (the channel layer is at-most-once) and repaired "
    "from stored state.",
)
stream_resets = Counter(
    "chatsite_stream_resets",
    "`reset` events sent: a client's position could not be served as it was.",
    ["reason"],
)


class _Tokens:
    """Text deltas runs received from the model and passed on: a plain integer per
    token, a counter at scrape time."""

    def __init__(self) -> None:
        self.count = 0

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            "chatsite_tokens_relayed",
            "Text deltas runs received from the model and passed on to viewers.",
            value=self.count,
        )

    def describe(self) -> Iterable[CounterMetricFamily]:
        return self.collect()


_tokens = _Tokens()
REGISTRY.register(_tokens)


# --- hooks (one call each where the thing happens) ------------------------------------


def token_relayed() -> None:
    """The per-token path: an integer increment, nothing else."""
    _tokens.count += 1


def tokens_relayed() -> int:
    return _tokens.count


def run_started() -> None:
    runs_started.inc()


def first_token(run_started_at: float) -> None:
    """`run_started_at` is `time.monotonic()` when the run started."""
    time_to_first_token.observe(time.monotonic() - run_started_at)


def run_ended(status: str, error: dict | None) -> None:
    runs_ended.labels(status=status).inc()
    if status == "interrupted":
        runs_interrupted.labels(reason=error["code"] if error else "unknown").inc()


def upstream_error(code: str, *, retried: bool = False) -> None:
    upstream_errors.labels(code=code, retried="true" if retried else "false").inc()


def replay_read(hit: bool) -> None:
    replay_reads.labels(result="hit" if hit else "miss").inc()


def gap_repaired() -> None:
    gaps_repaired.inc()


def stream_reset(reason: str) -> None:
    stream_resets.labels(reason=reason).inc()


def relayed(batches: Iterable) -> None:
    """A stream has the frames of `batches` ready to write: one observation per write,
    of its oldest event (batches are stamped `emitted_at`, the wall time the first event
    of each was emitted; see chat/fanout.py). Once per write, not per batch: a stream
    that fell behind writes many batches at once, and one observation costs ~1.6 µs."""
    for batch in batches:
        emitted_at = getattr(batch, "emitted_at", None)
        if emitted_at is not None:
            relay_latency.observe(max(0.0, time.time() - emitted_at))
            return


def measure_open_streams(count: Callable[[], float]) -> None:
    open_streams.set_function(count)


def measure_active_runs(count: Callable[[], float]) -> None:
    active_runs.set_function(count)
