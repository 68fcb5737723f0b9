"""Failures end to end: dead processes, shutdown, Redis outages, and the per-user limits.

Each test starts the daphne processes it kills, stops or configures itself (they share
the test database, and Redis where it says so, with the session's `cluster`, as a real
deployment would). Every wait is bounded, and every test ends by checking that no
message is left `pending`/`streaming` longer than the run-lease bound.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.models import Message
from tests.conftest import RedisServer, Server, cluster_env

from .client import ChatApi, OpenStream, StreamRead, fake, wait_for_final

pytestmark = pytest.mark.django_db(transaction=True)

# `cluster_env`: a 2 s lease renewed every 0.5 s. An orphaned run must be ended within
# lease + heartbeat, plus a margin for the sweeper's tick and the database.
LEASE_SECONDS = 2.0
HEARTBEAT_SECONDS = 0.5
ORPHAN_BOUND = LEASE_SECONDS + HEARTBEAT_SECONDS + 3.5  # 6 s
# How long a client waits for the next byte before the test fails (heartbeats are 15 s).
READ_TIMEOUT = 12.0
ACTIVE = (Message.Status.PENDING, Message.Status.STREAMING)


def words(prefix: str, count: int) -> str:
    """`count` four-character words: with the fake's default chunk=4, one delta each."""
    return "".join(f"{prefix}{i:02d} " for i in range(count))


def assistant_id_of(sent: dict) -> str:
    return sent["assistant_message"]["id"]


def steady_env(fake_anthropic: Server, redis: RedisServer, **extra: str) -> dict[str, str]:
    """`cluster_env` for a process that is not meant to die: a 30 s run lease.

    With the 2 s lease, a live run whose owner stalls for 2 s (a loaded machine, or the
    first-run SDK import, see `warm_up`) is ended `run_lost` by another process's sweeper.
    """
    return {**cluster_env(fake_anthropic, redis), "CHAT_RUN_LEASE_SECONDS": "30", **extra}


def warm_up(api: ChatApi) -> None:
    """Have a fresh process answer once, so the scenario's run is not its first.

    The first run imports the Anthropic SDK on the event loop (1-2 s here), during which
    the process renews no lease; with a 2 s lease that alone can get the run swept — so
    the warm-up itself may end `interrupted`, which is fine: it only loads the SDK.
    """
    conv = api.create_conversation()
    answer = assistant_id_of(api.send(conv["id"], f"Warm up {fake(tokens=1, tps=0)}"))
    wait_for_final(answer)


def last_id(read: StreamRead) -> str:
    ids = [event_id for _, _, event_id in read.events if event_id]
    assert ids, "no event carried an id"
    return ids[-1]


def read_until_closed(stream: OpenStream, *, until_end_of: str) -> tuple[StreamRead, bool]:
    """Events until `until_end_of`'s `message_end` or until the server closes the stream.

    Returns (events, closed). A stream that neither ends the message nor closes within
    the stream's timeout fails the test (httpx raises a read timeout).
    """
    read = StreamRead()
    deadline = time.monotonic() + stream.timeout
    try:
        for sse in stream.events:
            assert time.monotonic() < deadline, "stream read timed out"
            if not sse.data:
                continue
            read.events.append((sse.event, json.loads(sse.data), sse.id))
            if sse.event == "message_end" and read.events[-1][1]["message_id"] == until_end_of:
                return read, False
    except httpx.TimeoutException:
        raise AssertionError("the stream neither ended the message nor closed") from None
    except httpx.TransportError:
        pass  # the connection was cut mid-body: closed
    return read, True


def wait_until_streaming(message_id: str, timeout: float = 10.0) -> Message:
    """Until the run has checkpointed some text (status `streaming`, content non-empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = Message.objects.get(pk=message_id)
        if message.status == Message.Status.STREAMING and message.content:
            return message
        time.sleep(0.05)
    raise AssertionError(f"message {message_id} did not start streaming in {timeout}s")


def assert_nothing_left_active(bound: float = ORPHAN_BOUND) -> None:
    """No message stays `pending`/`streaming`: any still active ends within `bound`."""
    deadline = time.monotonic() + bound
    while Message.objects.filter(status__in=ACTIVE).exists():
        if time.monotonic() > deadline:
            left = list(Message.objects.filter(status__in=ACTIVE).values_list("pk", "status"))
            raise AssertionError(f"messages still active after {bound}s: {left}")
        time.sleep(0.1)


def open_stream_status(api: ChatApi, conversation_id: str) -> httpx.Response:
    """GET the stream once; return the response of a refusal (body read), or the 200's head."""
    url = api.stream_url(conversation_id)
    with httpx.stream("GET", api.base_url + url, timeout=10.0) as response:
        if response.status_code != 200:
            response.read()
        return response


def access_log_statuses(log: Path) -> list[int]:
    """HTTP statuses of the daphne access-log lines (`... "GET /path" 200 123`)."""
    pattern = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) [^"]*" (\d{3}) ')
    return [int(m.group(1)) for m in pattern.finditer(log.read_text())]


def kill_and_reap(server: Server) -> None:
    server.process.kill()
    server.process.wait(timeout=10)


def terminate_quietly(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except Exception:
            server.process.kill()
            server.process.wait()


def _daphne_children() -> list[int]:
    """Live `chatsite.server` processes this test session started."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z" and b"chatsite.server" in cmdline:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def other_servers_paused() -> Iterator[None]:
    """Freeze (SIGSTOP) every daphne this session started so far; resume them after.

    They share the test database, so their sweepers would end an orphan first. A
    server started inside the block is not paused.
    """
    paused = _daphne_children()
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def api_a(cluster, user, password) -> ChatApi:
    a, _ = cluster
    return ChatApi(a.url, user.username, password)


# --- 1. the owning process is SIGKILLed ------------------------------------------------


def test_sigkill_of_the_owner_ends_the_run_interrupted_and_keeps_the_text(
    start_daphne, fake_anthropic, redis_server, api_a, user, password
):
    """Process C owns a run and is SIGKILLed: within lease + heartbeat another process's
    sweeper ends it `interrupted` (`run_lost`), stores at least what viewers saw, and a
    viewer on process A gets the rest of that text and `message_end` without reconnecting.
    """
    c = start_daphne(**cluster_env(fake_anthropic, redis_server))
    try:
        api_c = ChatApi(c.url, user.username, password)
        warm_up(api_c)
        text = words("k", 200)  # 10 s at 20 deltas/s: still running when C dies
        conv = api_c.create_conversation()
        with api_a.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
            assistant_id = assistant_id_of(api_c.send(conv["id"], f"Hi {fake(text=text, tps=20)}"))
            before = viewer.read(max_events=6)  # message_start and five deltas
            seen = before.text(assistant_id)
            assert seen and text.startswith(seen)

            c.process.kill()
            killed_at = time.monotonic()
            assert Message.objects.get(pk=assistant_id).is_active  # C died mid-run
            message = wait_for_final(assistant_id, timeout=ORPHAN_BOUND)
            assert time.monotonic() - killed_at <= ORPHAN_BOUND
            after = viewer.read(until_end_of=assistant_id)
            assert time.monotonic() - killed_at <= ORPHAN_BOUND
    finally:
        kill_and_reap(c)

    assert message.status == Message.Status.INTERRUPTED
    assert message.error_code == "run_lost"
    assert message.content, "the text that reached viewers was lost"
    assert text.startswith(message.content)
    received = seen + after.text(assistant_id)
    assert message.content.startswith(seen)
    assert received == message.content  # the viewer was repaired up to the stored text

    end = after.of("message_end")[-1][1]
    assert end["status"] == "interrupted"
    errors = after.of("error")
    assert errors and errors[-1][1]["code"] == "run_lost"
    assert_nothing_left_active()


# --- 2. a fresh process repairs what a dead one left -----------------------------------


def test_a_fresh_process_ends_runs_its_dead_predecessor_left(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """With no other process alive to sweep, D is SIGKILLed mid-run; starting E with the
    same configuration — and no request beyond its readiness check — ends the orphaned
    message `interrupted` (`run_lost`) within the lease bound, keeping its text.
    """
    env = cluster_env(fake_anthropic, private_redis)
    d = start_daphne(**env)
    api_d = ChatApi(d.url, user.username, password)
    warm_up(api_d)
    text = words("d", 80)
    conv = api_d.create_conversation()
    assistant_id = assistant_id_of(api_d.send(conv["id"], f"Hi {fake(text=text, tps=20)}"))
    wait_until_streaming(assistant_id)

    e = None
    with other_servers_paused():  # D included: from here on only E can sweep
        try:
            kill_and_reap(d)
            e = start_daphne(**env)
            message = wait_for_final(assistant_id, timeout=ORPHAN_BOUND)
            log = e.log.read_text()
        finally:
            if e is not None:
                terminate_quietly(e)

    assert message.status == Message.Status.INTERRUPTED
    assert message.error_code == "run_lost"
    assert message.content and text.startswith(message.content)
    assert f"run {assistant_id} was orphaned" in log  # E's sweeper did it, on its own
    assert_nothing_left_active()


# --- 3. SIGTERM drains ----------------------------------------------------------------


def test_sigterm_finishes_short_runs_interrupts_long_ones_and_viewers_resume_elsewhere(
    start_daphne, fake_anthropic, redis_server, api_a, user, password
):
    """SIGTERM with CHAT_DRAIN_SECONDS=2: F refuses new sends (503 `unavailable`, or no
    longer accepts connections — never a 500), lets the 1 s answer finish `complete`,
    ends the 10 s one `interrupted` (`server_shutdown`) with its partial text, closes
    its streams and exits. The viewer resumes on A from its last id: exactly the rest
    and `message_end`, reconstructing the stored text.
    """
    drain = 2.0
    f = start_daphne(**steady_env(fake_anthropic, redis_server, CHAT_DRAIN_SECONDS=str(drain)))
    try:
        api_f = ChatApi(f.url, user.username, password)
        long_text, short_text = words("L", 80), words("s", 20)  # 10 s at 8/s; 1 s at 20/s
        long_conv, short_conv, late_conv = (api_f.create_conversation() for _ in range(3))

        with api_f.stream(long_conv["id"], timeout=READ_TIMEOUT) as viewer:
            long_id = assistant_id_of(
                api_f.send(long_conv["id"], f"Long {fake(text=long_text, tps=8)}")
            )
            before = viewer.read(max_events=3)  # message_start and two deltas
            assert before.text(long_id)
            short_id = assistant_id_of(
                api_f.send(short_conv["id"], f"Short {fake(text=short_text, tps=20)}")
            )
            wait_until_streaming(short_id)  # both runs are under way on F
            assert Message.objects.get(pk=long_id).is_active

            f.process.terminate()
            terminated_at = time.monotonic()
            time.sleep(0.3)
            late_statuses = []
            for post in (
                api_f.http.post,  # a kept-alive connection, if it is still open
                lambda url, **kw: httpx.post(f.url + url, timeout=5.0, **kw),  # a new one
            ):
                try:
                    response = post(
                        f"/api/v1/conversations/{late_conv['id']}/messages/",
                        json={"content": f"Late {fake(tokens=2, tps=0)}"},
                    )
                except httpx.TransportError:
                    late_statuses.append("refused")
                    continue
                late_statuses.append(response.status_code)
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "unavailable"

            rest_on_f, closed = read_until_closed(viewer, until_end_of=long_id)

        f.process.wait(timeout=max(0.1, drain + 5 - (time.monotonic() - terminated_at)))
    finally:
        terminate_quietly(f)

    assert late_statuses and all(s in (503, "refused") for s in late_statuses), late_statuses
    assert not Message.objects.filter(conversation_id=late_conv["id"]).exists()

    short = wait_for_final(short_id, timeout=5)
    assert short.status == Message.Status.COMPLETE
    assert short.content == short_text

    long = wait_for_final(long_id, timeout=5)
    assert long.status == Message.Status.INTERRUPTED
    assert long.error_code == "server_shutdown"
    assert long.content and long_text.startswith(long.content)
    assert len(long.content) < len(long_text)

    on_f = StreamRead(before.events + rest_on_f.events)
    if not closed:
        # F delivered the end before closing: nothing is left to resume.
        assert on_f.of("message_end")[-1][1]["status"] == "interrupted"
        assert on_f.text(long_id) == long.content
    else:
        with api_a.stream(long_conv["id"], last_event_id=last_id(on_f), timeout=10) as resumed:
            rest = resumed.read(until_end_of=long_id)
        assert rest.of("message_start") == []
        assert [e[1]["status"] for e in rest.of("message_end")] == ["interrupted"]
        assert [e[1]["code"] for e in rest.of("error")] == ["server_shutdown"]
        assert on_f.text(long_id) + rest.text(long_id) == long.content
    assert_nothing_left_active()


# --- 4. Redis goes away mid-run and comes back ------------------------------------------


def test_redis_outage_runs_finish_in_the_database_streams_refuse_503_then_recover(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """Redis stops while G streams an answer: the run goes on and saves the full text
    `complete`; a new stream is refused 503 `unavailable` with Retry-After (never a 500);
    after Redis is back on the same port, streams open again and a resume from the
    viewer's last id returns exactly the rest and `message_end`.
    """
    g = start_daphne(**steady_env(fake_anthropic, private_redis))
    try:
        api = ChatApi(g.url, user.username, password)
        text = words("r", 80)  # 8 s at 10/s
        conv = api.create_conversation()
        with api.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
            assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=10)}"))
            before = viewer.read(max_events=6)
        assert before.text(assistant_id)

        private_redis.stop()
        assert Message.objects.get(pk=assistant_id).is_active  # Redis went away mid-run
        refused = open_stream_status(api, conv["id"])
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["code"] == "unavailable"
        assert int(refused.headers["retry-after"]) > 0

        message = wait_for_final(assistant_id, timeout=15)
        assert message.status == Message.Status.COMPLETE
        assert message.content == text
        assert_nothing_left_active(bound=0)

        private_redis.start()
        deadline = time.monotonic() + 10
        while (status := open_stream_status(api, conv["id"]).status_code) != 200:
            assert status == 503, status
            assert time.monotonic() < deadline, "streams did not recover after Redis came back"
            time.sleep(0.2)

        with api.stream(conv["id"], last_event_id=last_id(before), timeout=10) as resumed:
            rest = resumed.read(until_end_of=assistant_id)
        assert rest.of("message_start") == []
        assert [e[1]["status"] for e in rest.of("message_end")] == ["complete"]
        assert before.text(assistant_id) + rest.text(assistant_id) == text
    finally:
        terminate_quietly(g)
    assert 500 not in access_log_statuses(g.log)
    # Up to the shutdown (where daphne cancels open requests), nothing crashed.
    assert "Traceback" not in g.log.read_text().split("draining:")[0]
    assert_nothing_left_active()


def test_redis_outage_new_sends_are_accepted_and_complete(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """While Redis is down, POSTing a message to G still answers 201 (never a 500), and
    that new run completes with its text in the database.
    """
    g = start_daphne(**steady_env(fake_anthropic, private_redis))
    try:
        api = ChatApi(g.url, user.username, password)
        conv = api.create_conversation()
        private_redis.stop()
        text = words("n", 10)
        response = api.http.post(
            f"/api/v1/conversations/{conv['id']}/messages/",
            json={"content": f"Hi {fake(text=text, tps=20)}"},
        )
        assert response.status_code == 201, (response.status_code, response.text[:300])
        message = wait_for_final(assistant_id_of(response.json()), timeout=10)
        assert message.status == Message.Status.COMPLETE
        assert message.content == text
    finally:
        terminate_quietly(g)
    assert 500 not in access_log_statuses(g.log)
    assert_nothing_left_active()


def test_a_viewer_connected_when_redis_stops_is_not_left_hanging(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """A viewer streams from G when Redis stops. Its stream must not go silent: within a
    few seconds (well before a heartbeat) it either reaches `message_end` or is closed,
    so EventSource reconnects and resumes. The run itself completes.
    """
    g = start_daphne(**steady_env(fake_anthropic, private_redis))
    try:
        api = ChatApi(g.url, user.username, password)
        text = words("h", 80)  # 8 s at 10/s
        conv = api.create_conversation()
        with api.stream(conv["id"], timeout=8) as viewer:
            assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=10)}"))
            before = viewer.read(max_events=3)
            assert before.text(assistant_id)
            private_redis.stop()
            assert Message.objects.get(pk=assistant_id).is_active
            rest, closed = read_until_closed(viewer, until_end_of=assistant_id)
        if not closed:
            assert before.text(assistant_id) + rest.text(assistant_id) == text
        message = wait_for_final(assistant_id, timeout=15)
        assert message.status == Message.Status.COMPLETE
        assert message.content == text
    finally:
        terminate_quietly(g)
    assert_nothing_left_active()


# --- the channel layer under normal operation ------------------------------------------


def test_live_deltas_are_not_held_back(start_daphne, fake_anthropic, redis_server, user, password):
    """On a Redis-backed process, a viewer gets an answer streamed at 10 deltas/s live:
    no gap over 2.5 s between the send and the first delta, or between two deltas
    (channels of different prefixes once held them back ~5 s at a time).
    """
    p = start_daphne(**steady_env(fake_anthropic, redis_server))
    try:
        api = ChatApi(p.url, user.username, password)
        warm_up(api)  # measure the channel layer, not the first run's SDK import
        conv = api.create_conversation()
        text = words("v", 60)  # 6 s at 10/s
        with api.stream(conv["id"], timeout=15) as viewer:
            sent_at = time.monotonic()
            assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=10)}"))
            arrivals = [sent_at]
            for sse in viewer.events:
                assert time.monotonic() - sent_at < 20, "stream read timed out"
                if sse.event == "delta":
                    arrivals.append(time.monotonic())
                if sse.event == "message_end":
                    break
        assert wait_for_final(assistant_id).status == Message.Status.COMPLETE
    finally:
        terminate_quietly(p)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert max(gaps) <= 2.5, f"deltas held back up to {max(gaps):.1f}s"
    assert_nothing_left_active()


def test_an_idle_stream_still_delivers_the_next_answer(
    start_daphne, fake_anthropic, redis_server, user, password
):
    """A viewer that sat idle for 14 s on a Redis-backed process (nothing to deliver, no
    heartbeat due yet) still receives the next answer.
    """
    p = start_daphne(**steady_env(fake_anthropic, redis_server))
    try:
        api = ChatApi(p.url, user.username, password)
        conv = api.create_conversation()
        text = words("i", 10)
        with api.stream(conv["id"], timeout=READ_TIMEOUT) as viewer:
            time.sleep(14)
            assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=20)}"))
            read = viewer.read(until_end_of=assistant_id)
        assert read.text(assistant_id) == text
        assert wait_for_final(assistant_id).status == Message.Status.COMPLETE
    finally:
        terminate_quietly(p)
    assert_nothing_left_active()


# --- 5. open-stream cap ------------------------------------------------------------------


def test_open_streams_are_capped_per_user_across_processes(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """CHAT_MAX_STREAMS_PER_USER=2 over two processes sharing Redis: two open streams are
    fine, a third is refused before the stream starts (429 JSON `too_many_streams`,
    Retry-After); once one closes, a new stream is accepted.
    """
    env = steady_env(fake_anthropic, private_redis, CHAT_MAX_STREAMS_PER_USER="2")
    h1, h2 = start_daphne(**env), start_daphne(**env)
    try:
        api1 = ChatApi(h1.url, user.username, password)
        api2 = ChatApi(h2.url, user.username, password)
        conv = api1.create_conversation()
        with contextlib.ExitStack() as streams:
            # Keep each OpenStream referenced: a collected one closes its connection.
            first = streams.enter_context(contextlib.ExitStack())
            open_streams = [
                first.enter_context(api1.stream(conv["id"])),
                streams.enter_context(api2.stream(conv["id"])),
            ]

            for api in (api1, api2):
                refused = open_stream_status(api, conv["id"])
                assert refused.status_code == 429
                assert refused.headers["content-type"].startswith("application/json")
                assert refused.json()["code"] == "too_many_streams"
                assert int(refused.headers["retry-after"]) > 0

            first.close()  # the client goes away; its slot is released
            del open_streams[0]
            deadline = time.monotonic() + 5
            while (status := open_stream_status(api1, conv["id"]).status_code) != 200:
                assert status == 429, status
                assert time.monotonic() < deadline, "the closed stream's slot was not released"
                time.sleep(0.2)
    finally:
        terminate_quietly(h1)
        terminate_quietly(h2)
    assert_nothing_left_active()


# --- 6. send throttle --------------------------------------------------------------------


def test_the_fourth_send_in_a_minute_is_throttled(
    start_daphne, fake_anthropic, private_redis, user, password
):
    """CHAT_SEND_RATE=3/min: three sends (in three conversations) are accepted, the
    fourth is refused 429 JSON `throttled` with Retry-After, and creates no message.
    """
    t = start_daphne(**steady_env(fake_anthropic, private_redis, CHAT_SEND_RATE="3/min"))
    try:
        api = ChatApi(t.url, user.username, password)
        convs = [api.create_conversation() for _ in range(4)]
        answers = [
            assistant_id_of(api.send(conv["id"], f"Hi {fake(tokens=2, tps=0)}"))
            for conv in convs[:3]
        ]
        response = api.http.post(
            f"/api/v1/conversations/{convs[3]['id']}/messages/",
            json={"content": f"Hi {fake(tokens=2, tps=0)}"},
        )
        assert response.status_code == 429, response.text
        assert response.json()["code"] == "throttled"
        assert int(response.headers["retry-after"]) > 0
        assert not Message.objects.filter(conversation_id=convs[3]["id"]).exists()
        for answer in answers:
            assert wait_for_final(answer).status == Message.Status.COMPLETE
    finally:
        terminate_quietly(t)
    assert_nothing_left_active()
