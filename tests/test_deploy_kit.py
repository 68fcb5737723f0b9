"""The deployment kit under deploy/: systemd units that systemd accepts and that stop a
process the way it drains, and an example env file that production settings start with.

(The nginx site file runs for real in tests/e2e/test_nginx.py.)"""

from __future__ import annotations

import configparser
import importlib.util
import re
import secrets
import shutil
import subprocess
import sys

import pytest

from chat.conf import DEFAULTS
from tests.chatsite.test_settings import manage
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
UNITS = ["chatsite@.service", "chatsite-migrate.service"]


def unit(name: str) -> configparser.ConfigParser:
    # strict=False: a unit may repeat a key (ExecStart=); the last one is enough here.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def example_env() -> dict[str, str]:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_each_process_drains_before_systemd_kills_it():
    """chatsite@PORT serves PORT (on loopback unless the env file says otherwise) with the
    environment file, is stopped with
    SIGTERM (which drains) and killed only after longer than the drain may take, restarts
    when it dies, and starts after (and only with) the migrate unit."""
    service = unit("chatsite@.service")
    section = service["Service"]
    assert section["EnvironmentFile"] == "/etc/chatsite/env"
    assert re.search(
        r" -m chatsite\.server -b \$\{CHATSITE_BIND_ADDRESS\} -p %i ", section["ExecStart"]
    )
    assert section["Environment"] == "CHATSITE_BIND_ADDRESS=127.0.0.1"  # the env file may change it
    assert importlib.util.find_spec("chatsite.server") is not None
    assert section["KillSignal"] == "SIGTERM"
    drain = max(DEFAULTS["DRAIN_SECONDS"], float(example_env()["CHAT_DRAIN_SECONDS"]))
    assert int(section["TimeoutStopSec"]) > drain
    assert section["Restart"] == "always"
    assert "chatsite-migrate.service" in service["Unit"]["Requires"]
    assert "chatsite-migrate.service" in service["Unit"]["After"]


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened(name):
    """Both units run as the chatsite user, without new privileges, on a read-only system
    with a private /tmp."""
    section = unit(name)["Service"]
    assert section["User"] == "chatsite"
    assert section["NoNewPrivileges"] == "true"
    assert section["ProtectSystem"] == "strict"
    assert section["PrivateTmp"] == "true"
    assert section["CapabilityBoundingSet"] == ""


def test_the_migrate_unit_migrates_and_collects_static_files_where_it_may_write():
    """The one-shot unit runs migrate and collectstatic, again for each start of a process
    (it does not stay active), and may write only the static root the example env file
    names."""
    text = (DEPLOY / "systemd" / "chatsite-migrate.service").read_text()
    commands = re.findall(r"^ExecStart=(.*)$", text, re.M)
    assert [c.split(" manage.py ")[1].split()[0] for c in commands] == ["migrate", "collectstatic"]
    assert (
        unit("chatsite-migrate.service")["Service"]["ReadWritePaths"]
        == (example_env()["DJANGO_STATIC_ROOT"])
    )


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_accepts_the_units(tmp_path):
    """`systemd-analyze verify` finds nothing to say about either unit (an unknown key or a
    bad value is a warning it prints), with the venv's python where the units expect it."""
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/chatsite/.venv/bin/python", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", "chatsite@8001.service", "chatsite-migrate.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_the_example_env_file_starts_production_settings():
    """deploy/env.example, with its secret key filled in, loads the production settings and
    passes Django's deployment checklist; and it sets only variables chatsite reads."""
    env = example_env()
    assert env["DJANGO_SETTINGS_MODULE"] == "chatsite.settings.production"
    assert env["DJANGO_SECRET_KEY"] == ""  # each site makes its own
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stderr

    read = (ROOT / "chatsite" / "env.py").read_text() + (
        ROOT / "chatsite" / "settings" / "production.py"
    ).read_text()
    for name in env:
        assert f'"{name}"' in read or name == "DJANGO_SETTINGS_MODULE", f"{name} is not read"
