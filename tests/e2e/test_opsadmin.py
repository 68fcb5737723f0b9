"""The operators' admin on a two-process site (PostgreSQL + Redis): the live-runs page of
one process lists a run of the other, and its force stop ends that run `cancelled`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from django.db import connection

from chat.models import Message
from tests.conftest import ROOT, _database_url

from .admin import AdminClient
from .client import ChatApi, fake, wait_for_final

# As in test_access.py: the servers cache content type ids, which a flush between tests
# would re-create under new ones; this module's tests leave that table alone.
pytestmark = pytest.mark.django_db(
    transaction=True,
    available_apps=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.sessions",
        "rest_framework_simplejwt.token_blacklist",
        "accounts",
        "chat",
    ],
)

ADMIN_PASSWORD = "admin-pw-not-secret-2"
LIVE = "/admin/chat/liverun/"


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("ops", "ops@example.com", ADMIN_PASSWORD)


def row_of(html: str, message_id: str) -> dict[str, str]:
    """The live-runs row of `message_id`, as {column: cell text}."""
    for row in html.split("<tr")[1:]:
        if f'value="{message_id}"' in row:
            cells = re.findall(r'<t[dh] class="[^"]*field-(\w+)[^"]*">(.*?)</t[dh]>', row)
            return {name: re.sub(r"<[^>]+>", "", cell) for name, cell in cells}
    raise AssertionError(f"{message_id} is not on the page")


def test_live_runs_on_a_lists_a_run_of_b_and_force_stop_ends_it(cluster, admin, user, password):
    """A slow answer runs on B; A's live-runs page shows it with B's host and pid, text
    so far and its time to first token; "Force stop" on A ends it `cancelled`, which a
    viewer on B sees as `message_end` `cancelled`, with the text it had."""
    a, b = cluster
    api_b = ChatApi(b.url, user.username, password)
    conversation = api_b.create_conversation()["id"]
    text = "".join(f"w{i:03d} " for i in range(400))
    with api_b.stream(conversation, timeout=30) as stream:
        sent = api_b.send(conversation, f"Slow {fake(text=text, tps=20)}")
        message_id = sent["assistant_message"]["id"]
        assert [e[0] for e in stream.read(max_events=3).events] == [
            "message_start",
            "delta",
            "delta",
        ]
        # Its first checkpoint (every 0.5 s) stores the text so far and its first text time.
        deadline = time.monotonic() + 10
        while not Message.objects.get(pk=message_id).first_token_at:
            assert time.monotonic() < deadline, "no checkpoint stored the run's text"
            time.sleep(0.1)

        ops = AdminClient(a.url, admin.username, ADMIN_PASSWORD)
        page = ops.http.get(LIVE)
        assert page.status_code == 200
        row = row_of(page.text, message_id)
        assert f"pid {b.process.pid}" in row["process"]
        assert "(this process)" not in row["process"]
        assert int(row["text_so_far"].split()[0].replace(",", "")) > 0
        assert row["time_to_first_token"].endswith(" s")
        assert row["status_cue"].startswith("streaming")

        after = ops.run_action(LIVE, "force_stop", [message_id])
        assert "Asked 1 run to stop" in after.text
        rest = stream.read(until_end_of=message_id)

    end = rest.of("message_end")[-1][1]
    assert (end["message_id"], end["status"]) == (message_id, "cancelled")
    stored = wait_for_final(message_id)
    assert stored.status == Message.Status.CANCELLED
    assert stored.error_code == ""  # stopped by its own run, not swept
    assert stored.cancel_requested_at is not None
    assert 0 < len(stored.content) < len(text)
    assert text.startswith(stored.content)
    # Gone from the live list.
    assert f'value="{message_id}"' not in ops.http.get(LIVE).text


def test_end_stale_runs_all_stops_a_live_run_of_another_process(
    cluster, redis_server, user, password
):
    """`manage.py end_stale_runs --all`, a process of its own on the site's database and
    Redis, stops a run of B as the stop button would: B's run ends it `cancelled` and a
    viewer on A sees `message_end` `cancelled`; the command lists it."""
    a, b = cluster
    api_b = ChatApi(b.url, user.username, password)
    conversation = api_b.create_conversation()["id"]
    text = "".join(f"e{i:03d} " for i in range(400))
    with ChatApi(a.url, user.username, password).stream(conversation, timeout=30) as on_a:
        message_id = api_b.send(conversation, f"Slow {fake(text=text, tps=20)}")[
            "assistant_message"
        ]["id"]
        assert [e[0] for e in on_a.read(max_events=2).events] == ["message_start", "delta"]
        command = subprocess.run(
            [sys.executable, "manage.py", "end_stale_runs", "--all", "--wait", "10"],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "chatsite.settings.test",
                "DATABASE_URL": _database_url(connection.settings_dict),
                "REDIS_URL": redis_server.url,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert command.returncode == 0, command.stderr
        rest = on_a.read(until_end_of=message_id)
    assert f"{message_id} cancelled conversation {conversation}" in command.stdout
    assert command.stdout.endswith("Ended 1 answer.\n")
    end = rest.of("message_end")[-1][1]
    assert (end["message_id"], end["status"]) == (message_id, "cancelled")
    stored = Message.objects.get(pk=message_id)
    assert (stored.status, stored.error_code) == ("cancelled", "")
    assert text.startswith(stored.content) and stored.content
