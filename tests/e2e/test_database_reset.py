"""PostgreSQL connections reset while answers stream (issue 11).

`pg_terminate_backend` ends every server process of the test database but the test's
own — the pooled connections of the daphne under test, idle or in the middle of a
checkpoint, a lease renewal, a sweep or a request — as a database restart or a
failover would. What must hold: no client ever gets a 500, every answer reaches a
final status, and the text a streaming client saw is the text stored.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from datetime import timedelta

import httpx
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from chat.models import Message

from .client import ChatApi, fake, wait_for_final
from .test_failures import (
    READ_TIMEOUT,
    access_log_statuses,
    assert_nothing_left_active,
    assistant_id_of,
    other_servers_paused,
    steady_env,
    terminate_quietly,
    wait_until_streaming,
    warm_up,
    words,
)

pytestmark = pytest.mark.django_db(transaction=True)


def terminate_backends(*, sparing: int | None = None) -> int:
    """End every other backend of this database (but `sparing`); how many were ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND pid IS DISTINCT FROM %s",
            [sparing],
        )
        return sum(1 for (ended,) in cursor.fetchall() if ended)


def waiting_for_a_lock() -> list[str]:
    """The statements of this database's backends that wait for a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return [query for (query,) in cursor.fetchall()]


@contextlib.contextmanager
def table_locked(table: str):
    """Hold an ACCESS EXCLUSIVE lock on `table` from a connection of the test's own (so
    every statement that touches it waits); yields that connection's backend pid."""
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"] or "postgres",
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        password=settings["PASSWORD"] or None,
    ) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield locker.info.backend_pid
        finally:
            locker.commit()


def start_streaming(api: ChatApi, streams: contextlib.ExitStack, convs: list, texts: list):
    """Open a viewer on each conversation, send each its text (10 deltas/s), and wait until
    every answer streams: (viewers, answer ids)."""
    viewers = [
        streams.enter_context(api.stream(conv["id"], timeout=READ_TIMEOUT + 20)) for conv in convs
    ]
    ids = [
        assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=10)}"))
        for conv, text in zip(convs, texts, strict=True)
    ]
    for assistant_id in ids:
        wait_until_streaming(assistant_id)
    return viewers, ids


class Traffic(threading.Thread):
    """API requests in a loop, as other clients would make them, until stopped:
    every response's (method path, status, JSON error code)."""

    def __init__(self, api: ChatApi, conversation_id: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.conversation_id = conversation_id
        self.responses: list[tuple[str, int, str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        conv = f"/api/v1/conversations/{self.conversation_id}/"
        calls = [
            ("GET", "/api/v1/conversations/"),
            ("GET", conv),
            ("GET", f"{conv}messages/"),
            ("POST", f"{conv}stream-token/"),
        ]
        while not self.stopping.is_set():
            for method, path in calls:
                response = self.api.http.request(method, path)
                code = None
                if response.status_code >= 400:
                    with contextlib.suppress(ValueError):  # a 500 is an HTML page
                        code = response.json().get("code")
                self.responses.append((f"{method} {path}", response.status_code, code))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def test_terminated_database_connections_lose_no_answer_and_give_no_500(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """Three answers stream (about 8 s each, checkpointed every 0.2 s, leases renewed and
    orphans swept every 0.5 s) while API clients keep asking; every backend of the
    database is terminated four times, 0.7 s apart. Afterwards: no response was a 500
    (a request whose connection died under it may get 503 `database_unavailable` with
    Retry-After, nothing else fails), checkpoints go on, the sweeper still ends an
    orphaned answer, every answer is `complete` with exactly the text its streaming
    client saw, and the process logged no traceback.
    """
    # The session's other servers share the database: paused, their sweepers cannot
    # end the orphan below before this server's does.
    paused = contextlib.ExitStack()
    paused.enter_context(other_servers_paused())
    server = start_daphne(
        **steady_env(fake_anthropic, private_redis, CHAT_CHECKPOINT_INTERVAL="0.2")
    )
    try:
        api = ChatApi(server.url, user.username, password)
        warm_up(api)
        texts = [words(f"{i}d", 80) for i in range(3)]  # 8 s each at 10 deltas/s
        convs = [api.create_conversation() for _ in texts]
        traffic = Traffic(ChatApi(server.url, user.username, password), convs[0]["id"])
        with contextlib.ExitStack() as streams:
            viewers, ids = start_streaming(api, streams, convs, texts)

            traffic.start()
            ended = []
            for _ in range(4):
                ended.append(terminate_backends())
                time.sleep(0.7)
            stored_then = {
                pk: len(content)
                for pk, content in Message.objects.filter(pk__in=ids).values_list("pk", "content")
            }
            # Checkpoints go on after the resets: some answer's stored text grows while
            # it still streams (each has seconds of text left).
            deadline = time.monotonic() + 5
            while not any(
                len(message.content) > stored_then[message.pk]
                for message in Message.objects.filter(pk__in=ids, status="streaming")
            ):
                assert time.monotonic() < deadline, "no checkpoint was saved after the resets"
                time.sleep(0.1)
            traffic.stop()
            reads = [
                viewer.read(until_end_of=assistant_id)
                for viewer, assistant_id in zip(viewers, ids, strict=True)
            ]

        # After the resets, requests are served as before, and the sweeper still sweeps:
        # an answer whose (made-up) owner's lease lapsed is ended `interrupted`.
        assert api.http.get("/api/v1/conversations/").status_code == 200
        assert httpx.get(f"{server.url}/accounts/login/", timeout=10).status_code == 200
        orphan = Message.objects.create(
            conversation_id=convs[0]["id"],
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            content="Half an answer",
            run_owner="a-process-that-died",
            run_lease_expires_at=timezone.now() - timedelta(seconds=1),
        )
        swept = wait_for_final(str(orphan.pk), timeout=10)
        assert (swept.status, swept.error_code) == (Message.Status.INTERRUPTED, "run_lost")
        assert swept.content == "Half an answer"
        assert f"run {orphan.pk} was orphaned" in server.log.read_text()
    finally:
        terminate_quietly(server)
        paused.close()

    assert ended[0] > 0, "the server under test had no connection to terminate"
    assert traffic.responses, "no API request was made during the resets"
    failed = [r for r in traffic.responses if r[1] >= 400]
    assert all(r[1:] == (503, "database_unavailable") for r in failed), failed
    assert 500 not in access_log_statuses(server.log)

    for assistant_id, text, read in zip(ids, texts, reads, strict=True):
        message = wait_for_final(assistant_id)
        assert message.status == Message.Status.COMPLETE, (message.status, message.error_code)
        assert message.content == text
        assert read.text(assistant_id) == message.content
        assert read.of("message_end")[-1][1]["status"] == "complete"
    # Up to the shutdown (where daphne cancels open requests), nothing crashed.
    assert "Traceback" not in server.log.read_text().split("draining:")[0]
    assert_nothing_left_active()


def test_statements_cut_mid_flight_are_run_again_or_answered_503(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """The message table is locked, so the run core's statements (a checkpoint, a lease
    renewal or a sweep) and an API request that reads messages wait, mid-statement, when every
    backend is terminated. The request gets 503 `database_unavailable` with Retry-After
    (its transaction is gone), not 500; the run core's statement runs again on a new
    connection and goes through once the lock is released; both answers end `complete`
    with exactly the text their clients saw.
    """
    paused = contextlib.ExitStack()
    paused.enter_context(other_servers_paused())  # only this server's statements wait
    server = start_daphne(
        **steady_env(fake_anthropic, private_redis, CHAT_CHECKPOINT_INTERVAL="0.2")
    )
    try:
        api = ChatApi(server.url, user.username, password)
        warm_up(api)
        texts = [words(f"{i}f", 80) for i in range(2)]  # 8 s each at 10 deltas/s
        convs = [api.create_conversation() for _ in texts]
        reader = ChatApi(server.url, user.username, password)
        responses: list[httpx.Response] = []
        with contextlib.ExitStack() as streams:
            viewers, ids = start_streaming(api, streams, convs, texts)

            with table_locked("chat_message") as locker:
                request = threading.Thread(
                    target=lambda: responses.append(
                        reader.http.get(f"/api/v1/conversations/{convs[0]['id']}/messages/")
                    ),
                    daemon=True,
                )
                request.start()
                deadline = time.monotonic() + 10
                while True:
                    waiting = waiting_for_a_lock()
                    # The request's read names the conversation (as hex: a bound UUID);
                    # the other waits are the run core's (the other servers are paused):
                    # a checkpoint, a lease renewal or a sweep, which share one thread.
                    reading = any(convs[0]["id"].replace("-", "") in q for q in waiting)
                    if reading and len(waiting) >= 2:
                        break
                    assert time.monotonic() < deadline, f"not waiting for the lock: {waiting}"
                    time.sleep(0.05)
                assert terminate_backends(sparing=locker) > 0
                time.sleep(0.5)  # the retried checkpoint waits for the lock again
            request.join(timeout=30)
            reads = [
                viewer.read(until_end_of=assistant_id)
                for viewer, assistant_id in zip(viewers, ids, strict=True)
            ]
    finally:
        terminate_quietly(server)
        paused.close()

    [response] = responses
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert 500 not in access_log_statuses(server.log)

    for assistant_id, text, read in zip(ids, texts, reads, strict=True):
        message = wait_for_final(assistant_id)
        assert message.status == Message.Status.COMPLETE, (message.status, message.error_code)
        assert message.content == text
        assert read.text(assistant_id) == message.content
        assert read.of("message_end")[-1][1]["status"] == "complete"
    log = server.log.read_text()
    # The run core's statement was run again on a new connection.
    assert re.search(r"(save_checkpoints|renew_leases|expired_runs): the database connection", log)
    assert "Traceback" not in log.split("draining:")[0]
    assert_nothing_left_active()
