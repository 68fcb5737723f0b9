"""What `make run` and `make test` install, and when: the runtime set for run, the test set
for test, each only when pyproject.toml or uv.lock changed since; and uv.lock kept in step
with pyproject.toml.

The Makefile runs for real here, on a venv of stand-ins: a `uv` and a `python` that only
write down how they were called, so nothing is installed or served."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UV_VERSION = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)[1]

# Writes its arguments, one call a line, to $CALLS; `uv lock --check` fails when
# $FAKE_UV_LOCK_STALE is set, as the real one does when pyproject.toml moved on without the lock.
STAND_IN = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$*" in "lock --check"*) [ -z "$FAKE_UV_LOCK_STALE" ] || exit 1 ;; esac
exit 0
"""


class Venv:
    def __init__(self, path: Path):
        self.path = path
        self.calls_file = path / "calls"
        bin_dir = path / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("uv", "python"):
            (bin_dir / name).write_text(STAND_IN)
            (bin_dir / name).chmod(0o755)
        # uv itself is in place: the venv was created and uv bootstrapped before.
        (path / f".uv-{UV_VERSION}").touch()
        self.calls_file.touch()

    def make(self, *targets: str, lock_stale: bool = False) -> subprocess.CompletedProcess:
        # Not what an outer `make test PORT=...` passes down: this make starts from defaults.
        outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PORT", "HOST", "VENV"}
        env = {
            **{k: v for k, v in os.environ.items() if k not in outer},
            "CALLS": str(self.calls_file),
            "FAKE_UV_LOCK_STALE": "1" if lock_stale else "",
        }
        return subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={self.path}", *targets],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def take_calls(self) -> list[str]:
        """The calls since the last look, as `uv sync ...`, `python manage.py ...`."""
        calls = self.calls_file.read_text().splitlines()
        self.calls_file.write_text("")
        return calls

    def syncs(self) -> list[str]:
        return [call for call in self.take_calls() if call.startswith("uv sync")]

    def age_stamps(self) -> None:
        """Make every install stamp older than pyproject.toml, as if it had just been edited."""
        old = (ROOT / "pyproject.toml").stat().st_mtime - 60
        for stamp in self.path.glob(".installed-*"):
            os.utime(stamp, (old, old))


@pytest.fixture
def venv(tmp_path) -> Venv:
    if not shutil.which("make"):
        pytest.fail("make is not on PATH")
    return Venv(tmp_path / "venv")


def test_make_run_installs_the_runtime_set_from_the_lock_without_the_test_extra(venv):
    result = venv.make("run")

    assert result.returncode == 0, result.stderr
    calls = venv.take_calls()
    assert calls[0].startswith("uv lock --check --offline")
    syncs = [call for call in calls if call.startswith("uv sync")]
    assert syncs == ["uv sync --locked --quiet --inexact"]
    # ... and then serves.
    assert [call for call in calls if call.startswith("python")] == [
        "python manage.py ensure_demo_user --migrate",
        "python -m chatsite.server -b 127.0.0.1 -p 8000 chatsite.asgi:application",
    ]


def test_a_second_make_run_installs_nothing(venv):
    assert venv.make("run").returncode == 0
    venv.take_calls()

    result = venv.make("run")

    assert result.returncode == 0, result.stderr
    calls = venv.take_calls()
    assert [call for call in calls if call.startswith("uv")] == []
    assert "python -m chatsite.server -b 127.0.0.1 -p 8000 chatsite.asgi:application" in calls


def test_make_run_installs_again_once_pyproject_or_the_lock_is_newer(venv):
    assert venv.make("run").returncode == 0
    venv.take_calls()
    venv.age_stamps()

    assert venv.make("run").returncode == 0

    assert venv.syncs() == ["uv sync --locked --quiet --inexact"]


def test_port_and_host_reach_the_server(venv):
    assert venv.make("run", "PORT=8001", "HOST=0.0.0.0").returncode == 0

    assert "python -m chatsite.server -b 0.0.0.0 -p 8001 chatsite.asgi:application" in (
        venv.take_calls()
    )


def test_switching_between_run_and_test_installs_only_what_is_missing(venv):
    # run first: the runtime set; then test adds the test extra, once.
    assert venv.make("run").returncode == 0
    assert venv.syncs() == ["uv sync --locked --quiet --inexact"]
    assert venv.make("install").returncode == 0
    assert venv.syncs() == ["uv sync --locked --quiet --extra test"]
    # From then on neither installs: the test set holds the runtime set.
    assert venv.make("run").returncode == 0
    assert venv.make("install").returncode == 0
    assert venv.make("run").returncode == 0
    assert venv.syncs() == []


def test_after_make_test_installs_make_run_installs_nothing(venv):
    assert venv.make("install").returncode == 0
    assert venv.syncs() == ["uv sync --locked --quiet --extra test"]

    assert venv.make("run").returncode == 0

    assert venv.syncs() == []


def test_make_bench_adds_its_extra_to_the_test_set_and_stamps_both(venv):
    assert venv.make("bench").returncode == 0
    assert venv.syncs() == ["uv sync --locked --quiet --inexact --extra test --extra bench"]

    assert venv.make("install").returncode == 0
    assert venv.make("run").returncode == 0

    assert venv.syncs() == []


def test_a_stale_lock_stops_make_run_with_what_to_do(venv):
    result = venv.make("run", lock_stale=True)

    assert result.returncode != 0
    assert "uv.lock is out of date with pyproject.toml: run 'make lock'" in result.stderr
    calls = venv.take_calls()
    assert not [call for call in calls if call.startswith(("uv sync", "python"))]
    assert not (venv.path / ".installed-run").exists()


def test_make_lock_resolves_the_lock_again(venv):
    assert venv.make("lock").returncode == 0

    assert venv.take_calls() == ["uv lock"]


def uv() -> str:
    """The uv `make` bootstrapped into this venv."""
    path = Path(sys.executable).parent / "uv"
    if not path.exists():
        pytest.fail(f"no uv beside {sys.executable}: install with `make install`")
    return str(path)


def lock_check(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [uv(), "lock", "--check", "--offline"],
        cwd=project,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_lock_is_current_with_pyproject():
    result = lock_check(ROOT)

    assert result.returncode == 0, f"{result.stderr}\nrun `make lock` and commit uv.lock"


def test_the_lock_check_fails_once_a_dependency_changes(tmp_path):
    """A dependency dropped from pyproject.toml without `make lock` is caught; the same copy
    unchanged passes (so it is the change that fails, offline, with or without uv's cache)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"regex>=2024.4",' in pyproject
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    (tmp_path / "pyproject.toml").write_text(pyproject)
    unchanged = lock_check(tmp_path)
    assert unchanged.returncode == 0, unchanged.stderr
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"regex>=2024.4",', ""))

    result = lock_check(tmp_path)

    assert result.returncode != 0
