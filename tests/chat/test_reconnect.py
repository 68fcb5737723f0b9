"""Database calls whose connection dies under them (chat/reconnect.py), on real PostgreSQL.

A statement is cut the way a restart or an administrator cuts it: another connection
runs `pg_terminate_backend` on the backend while the statement runs.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet

from chat.models import Message
from chat.reconnect import reconnecting
from chat.runs import store

pytestmark = pytest.mark.django_db(transaction=True)

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="terminates PostgreSQL backends"
)

SLOW_QUERY = "SELECT pg_backend_pid(), pg_sleep(0.5) /* cut me */"


class Terminator(threading.Thread):
    """Terminates, once, the backend that runs `SLOW_QUERY`; `killed` is its pid."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: int | None = None
        settings = connection.settings_dict
        self.conninfo = {
            "dbname": settings["NAME"],
            "user": settings["USER"] or "postgres",
            "host": settings["HOST"] or "127.0.0.1",
            "port": settings["PORT"] or 5432,
            "password": settings["PASSWORD"] or None,
            "autocommit": True,
        }

    def run(self) -> None:
        with psycopg.connect(**self.conninfo) as own:
            deadline = time.monotonic() + 10
            while self.killed is None and time.monotonic() < deadline:
                row = own.execute(
                    "SELECT pid FROM pg_stat_activity WHERE state = 'active'"
                    " AND datname = current_database()"  # not another test run's
                    " AND query LIKE %s AND pid <> pg_backend_pid()",
                    ["%/* cut me */%"],
                ).fetchone()
                if row:
                    own.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                    self.killed = row[0]
                time.sleep(0.02)


def admin_connection() -> psycopg.Connection:
    return psycopg.connect(**Terminator().conninfo)


def slow_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute(SLOW_QUERY)
        return cursor.fetchone()[0]


@needs_postgresql
def test_a_statement_cut_by_a_terminated_backend_runs_again_on_a_new_connection():
    """The first run's backend is terminated mid-statement: the call runs again, on a
    new connection (another backend), and returns its result."""
    terminator = Terminator()
    terminator.start()
    pid = reconnecting(slow_pid)()
    terminator.join()
    assert terminator.killed is not None
    assert pid != terminator.killed


@needs_postgresql
def test_inside_an_outer_transaction_a_cut_statement_is_not_run_again():
    """In an outer transaction the work before the statement died with the connection:
    the error surfaces instead of a half-done transaction going on."""
    terminator = Terminator()
    terminator.start()
    with pytest.raises(OperationalError), transaction.atomic():
        reconnecting(slow_pid)()
    terminator.join()
    assert terminator.killed is not None


def test_a_final_save_applied_before_its_connection_died_still_counts(conversation, monkeypatch):
    """The final save's UPDATE is applied, then its connection fails before the answer
    comes back: the second attempt recognises its own save, so the run still tells
    viewers the answer ended (a plain retry would find it no longer active)."""
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    )
    update = QuerySet.update
    cut = []

    def applied_then_cut(queryset, **fields):
        rows = update(queryset, **fields)
        if not cut:
            cut.append(rows)
            raise OperationalError("server closed the connection unexpectedly")
        return rows

    monkeypatch.setattr(QuerySet, "update", applied_then_cut)
    saved = async_to_sync(store.save_final)(
        str(message.pk),
        text="The whole answer.",
        status=Message.Status.COMPLETE,
        stop_reason="end_turn",
        input_tokens=3,
        output_tokens=4,
        error=None,
        orphan=False,
    )
    assert cut == [1]
    assert saved is True
    message.refresh_from_db()
    assert (message.status, message.content) == (Message.Status.COMPLETE, "The whole answer.")


@needs_postgresql
def test_after_every_idle_connection_died_a_checkout_is_served_at_once():
    """Four idle pooled connections are terminated (a restart or failover ends them
    all): the next checkout is served by a live connection at once, not after walking
    the dead ones with psycopg_pool's growing pauses (1 s + 2 s + 4 s between failed
    checks), and the pool keeps no dead connection."""
    connection.close()  # Django's own goes back to the pool too
    pool = connection.pool
    # Every idle connection of the pool (at least four), and only those: a connection that
    # another thread of this test process holds (an earlier async test's worker thread)
    # is not this test's to end, and ending it broke the tests that use it next.
    idle = max(4, pool.get_stats().get("pool_available", 0))
    taken = [pool.getconn() for _ in range(idle)]
    pids = [conn.info.backend_pid for conn in taken]
    for conn in taken:
        pool.putconn(conn)
    assert pool.get_stats().get("pool_available", 0) == len(taken)  # none left alive
    with admin_connection() as admin:
        ended = admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid = ANY(%s)",
            [pids],
        ).fetchall()
    assert sum(1 for _, done in ended if done) == len(taken)

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    assert time.monotonic() - started < 1.0  # the first of psycopg_pool's pauses is 1 s
    assert pid not in {row[0] for row in ended}
    connection.close()
    lost = pool.get_stats().get("connections_lost", 0)
    pool.check()  # would count any dead connection left in the pool
    assert pool.get_stats().get("connections_lost", 0) == lost
