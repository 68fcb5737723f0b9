"""`manage.py ensure_demo_user`, as `make run` calls it: on a database not yet created it
migrates, then makes the demo login, in one process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from tests.conftest import ROOT


def ensure_demo_user(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_"))
    } | {"DJANGO_SETTINGS_MODULE": "chatsite.settings.local", **env}
    return subprocess.run(
        [sys.executable, "manage.py", "ensure_demo_user", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_with_migrate_a_new_database_gets_its_tables_and_the_demo_login(tmp_path):
    database = tmp_path / "db.sqlite3"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
    }

    result = ensure_demo_user("--migrate", **env)

    assert result.returncode == 0, result.stderr
    assert "Applying chat.0001_initial... OK" in result.stdout
    assert result.stdout.rstrip().endswith("Demo login: username 'demo', password 'demo'")
    with sqlite3.connect(database) as connection:
        assert connection.execute(
            "SELECT is_staff, is_superuser FROM auth_user WHERE username = 'demo'"
        ).fetchall() == [(1, 1)]
    # A second run finds nothing to apply and keeps the one login.
    again = ensure_demo_user("--migrate", **env)
    assert again.returncode == 0, again.stderr
    assert "No migrations to apply." in again.stdout
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM auth_user").fetchone() == (1,)
