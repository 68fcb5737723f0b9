"""The soak's judges: the check that a resumed or stopped answer is exact, the numbers
that say whether a series is flat, and the gauges read from a server's event loop."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import threading

import pytest

from bench.soak_client import check_text
from bench.soak_report import series_summary
from bench.sut_launch import loop_gauges


def stamps(*seqs: int) -> str:
    """What the fake upstream (`--stamp`) sends: one `<seq>@<time> ` per delta."""
    return "".join(f"{n}@1700000000.{n:06d} " for n in seqs)


def test_a_whole_answer_is_exact():
    """Stamps 1…N in order and nothing else is a whole answer; 1…k is a stopped one."""
    assert check_text(stamps(1, 2, 3, 4), 4) is None
    assert check_text(stamps(1, 2), None) is None
    assert check_text("", None) is None


@pytest.mark.parametrize(
    ("text", "expected", "problem"),
    [
        (stamps(1, 2, 2, 3), 3, "duplicate"),  # a resume sent a token twice
        (stamps(1, 3), 3, "gap"),  # a resume skipped a token
        (stamps(1, 2) + "2@1700000000.000002 " + stamps(3), 3, "duplicate"),
        (stamps(1) + "0000.000002 " + stamps(2), 2, "garbage"),  # resumed mid-token
        (stamps(1, 2) + "3@17000", 3, "garbage"),  # cut off mid-token
        (stamps(1, 2), 3, "short"),
        (stamps(1, 2, 3, 4), 3, "long"),
    ],
)
def test_a_resume_that_loses_or_repeats_text_is_caught(text, expected, problem):
    """Any text lost, repeated or cut at the wrong offset is named, never passed."""
    assert check_text(text, expected) == problem


def test_growth_is_measured_by_first_and_last_minute_and_slope_per_hour():
    """A series growing 1 MB a minute shows +14 MB last minute against first, 60 MB/h;
    a flat one shows neither; samples outside the load are before/after, not in the fit."""
    load = 15 * 60
    growing = [(t, 100 + t / 60) for t in range(0, load + 1, 10)]
    flat = [(t, 100.0) for t in range(0, load + 1, 10)]
    outside = [(-5, 50.0), (load + 10, 70.0)]

    g = series_summary(sorted(growing + outside), load)
    assert g["last_minute"] - g["first_minute"] == pytest.approx(14, abs=0.5)
    assert g["slope_per_hour"] == pytest.approx(60)
    assert g["slope_per_hour_second_half"] == pytest.approx(60)
    assert (g["before"], g["after"]) == (50.0, 70.0)

    f = series_summary(flat, load)
    assert f["change"] == 0
    assert f["slope_per_hour"] == pytest.approx(0)


def test_gauges_are_read_on_the_servers_event_loop():
    """From another thread, the gauges count the loop's tasks by coroutine and
    include the app's open streams and runs."""
    for module in ("chat.fanout", "chat.runs"):  # what a running server has imported
        importlib.import_module(module)

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    finish: dict[str, asyncio.Future] = {}

    async def idle_stream() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        streams = [asyncio.create_task(idle_stream()) for _ in range(3)]
        finish["future"] = asyncio.get_running_loop().create_future()
        ready.set()
        await finish["future"]
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert ready.wait(5)
        gauges = loop_gauges(loop, timeout=5)
    finally:
        loop.call_soon_threadsafe(finish["future"].set_result, None)
        thread.join(5)
        loop.close()
    assert gauges["asyncio_tasks"] == 4  # main and its three streams
    assert gauges["tasks_by_coroutine"][idle_stream.__qualname__] == 3
    assert gauges["open_streams"] == 0
    assert gauges["runs"] == 0


def test_the_bench_database_and_redis_number_come_from_the_environment():
    """BENCH_PG_DB and BENCH_REDIS_DB move the harness; without them it uses
    chatsite_bench and Redis database 15."""
    code = "from bench import systems as s; print(s.PG_DSN, s.REDIS_URL)"

    def urls(**env: str) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
        out = subprocess.run(
            [sys.executable, "-c", code], env=environ | env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert urls() == [
        "postgres://postgres@127.0.0.1:5432/chatsite_bench",
        "redis://127.0.0.1:6379/15",
    ]
    assert urls(BENCH_PG_DB="chatsite_soakdev", BENCH_REDIS_DB="14") == [
        "postgres://postgres@127.0.0.1:5432/chatsite_soakdev",
        "redis://127.0.0.1:6379/14",
    ]
