"""Faults on the wire between the server and Claude, below HTTP (issue 11).

Each test starts its own daphne whose `ANTHROPIC_BASE_URL` is a fault-injecting TCP
proxy (`tests/faultproxy.py`) in front of the fake Anthropic server: the SDK, its
aiohttp transport and the provider see a real socket misbehave. What must hold:

* before any text, a failure is retried (the SDK's `ANTHROPIC_MAX_RETRIES`, here 2, in
  all) and then the answer is `failed` with the failure's code;
* after some text, it is `interrupted` with the text so far saved, and never retried
  (the client already has the text);
* an answer is `complete` only if `message_stop` arrived;
* each ends within a bound set by the read (idle) timeout, here 3 s, far under the
  SDK's own 10 minutes; streaming clients get `error` + `message_end` to match.
"""

from __future__ import annotations

import time

import pytest

from chat.models import Message
from tests.conftest import claude_env
from tests.faultproxy import Fault, FaultProxy

from .client import ChatApi, fake, wait_for_final
from .test_failures import assistant_id_of, terminate_quietly, words

pytestmark = pytest.mark.django_db(transaction=True)

READ_TIMEOUT = 3.0  # ANTHROPIC_READ_TIMEOUT of the servers under test
MAX_RETRIES = 2  # ANTHROPIC_MAX_RETRIES
# Generous slack for a loaded two-core machine on top of each bound below.
SLACK = 10.0
# The SDK's backoff before its two retries: at most 0.5 s and 1 s.
BACKOFF = 1.5

TEXT = words("w", 20)  # w00 .. w19, one delta each
SIX_WORDS = words("w", 6)  # what a client has when a fault hits after `w05 `


@pytest.fixture
def through_proxy(start_daphne, fake_anthropic, user, password):
    """`start(fault, faulty=None)`: a proxy with `fault` (on its first `faulty`
    connections, or on all) and a daphne whose upstream is that proxy."""
    started = []

    def start(fault: Fault, faulty: int | None = None) -> tuple[ChatApi, FaultProxy]:
        proxy = FaultProxy(fake_anthropic.url, fault, faulty=faulty).__enter__()
        started.append(proxy)
        env = claude_env(
            fake_anthropic,
            ANTHROPIC_BASE_URL=proxy.url,
            ANTHROPIC_READ_TIMEOUT=str(READ_TIMEOUT),
            ANTHROPIC_MAX_RETRIES=str(MAX_RETRIES),
        )
        server = start_daphne(**env)
        started.append(server)
        return ChatApi(server.url, user.username, password), proxy

    yield start
    for thing in reversed(started):
        if isinstance(thing, FaultProxy):
            thing.__exit__(None, None, None)
        else:
            terminate_quietly(thing)


def answer(api: ChatApi, text: str = TEXT, tps: int = 20) -> tuple[str, list, float]:
    """Send a message whose answer is `text`, and read its stream to `message_end`:
    (assistant id, the stream's events, when the answer ended)."""
    conv = api.create_conversation()
    with api.stream(conv["id"], timeout=60) as viewer:
        assistant_id = assistant_id_of(api.send(conv["id"], f"Hi {fake(text=text, tps=tps)}"))
        read = viewer.read(until_end_of=assistant_id)
    return assistant_id, read, time.monotonic()


def ended(read, assistant_id: str) -> tuple[str, str | None]:
    """(`message_end` status, the code of the `error` just before it, if any)."""
    events = [
        (name, data) for name, data, _ in read.events if data.get("message_id") == assistant_id
    ]
    name, end = events[-1]
    assert name == "message_end"
    error = events[-2][1]["code"] if len(events) > 1 and events[-2][0] == "error" else None
    return end["status"], error


def test_latency_on_the_wire_does_not_fail_the_answer(through_proxy):
    """Every chunk held 1 s each way (a third of the read timeout): the answer is
    `complete`, and the client saw exactly the stored text."""
    api, proxy = through_proxy(Fault.latency(1.0))
    assistant_id, read, _ = answer(api, words("w", 10), tps=5)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert message.content == words("w", 10)
    assert read.text(assistant_id) == message.content
    assert ended(read, assistant_id) == ("complete", None)
    assert proxy.connections == 1


def test_a_reset_before_the_response_is_retried_then_fails(through_proxy):
    """RST before the upstream's first byte, on every connection: the SDK tries three
    times (one try, two retries) and the answer is `failed` (`upstream_unreachable`),
    no text, within three connect attempts and the backoff."""
    api, proxy = through_proxy(Fault.reset(0))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.FAILED
    assert (message.content, message.error_code) == ("", "upstream_unreachable")
    assert ended(read, assistant_id) == ("failed", "upstream_unreachable")
    assert proxy.connections == 1 + MAX_RETRIES
    assert at - proxy.faults_started[0] < BACKOFF + SLACK


def test_a_reset_after_the_response_started_but_before_text_is_retried_then_fails(
    through_proxy,
):
    """RST right after `message_start` (the response began, no text yet), on every
    connection: the stream is started again, three tries in all as for a failed
    connect, then `failed` (`upstream_disconnected`) with no text."""
    api, proxy = through_proxy(Fault.reset(b"event: message_start"))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.FAILED
    assert (message.content, message.error_code) == ("", "upstream_disconnected")
    assert ended(read, assistant_id) == ("failed", "upstream_disconnected")
    assert read.text(assistant_id) == ""
    assert proxy.connections == 1 + MAX_RETRIES
    assert at - proxy.faults_started[0] < BACKOFF + SLACK


def test_a_stream_reset_before_its_first_text_once_is_answered_in_full(through_proxy):
    """RST after `message_start` on the first connection only: the retry answers, the
    answer is `complete`, and the client got one `message_start` and the text once."""
    api, proxy = through_proxy(Fault.reset(b"event: message_start"), faulty=1)
    assistant_id, read, _ = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert message.content == TEXT
    assert read.text(assistant_id) == TEXT
    assert len(read.of("message_start")) == 1
    assert ended(read, assistant_id) == ("complete", None)
    assert proxy.connections == 2


def test_a_reset_after_text_is_interrupted_with_the_text_so_far(through_proxy):
    """RST after the sixth delta: `interrupted` (`upstream_disconnected`) at once, the six
    words saved and seen by the client, and no retry (the client has the text)."""
    api, proxy = through_proxy(Fault.reset(b"w05"))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.INTERRUPTED
    assert (message.content, message.error_code) == (SIX_WORDS, "upstream_disconnected")
    assert read.text(assistant_id) == SIX_WORDS
    assert ended(read, assistant_id) == ("interrupted", "upstream_disconnected")
    assert proxy.connections == 1
    assert at - proxy.faults_started[0] < SLACK


def test_half_open_after_text_is_interrupted_within_the_read_timeout(through_proxy):
    """After the sixth delta the proxy forwards nothing and closes nothing (a peer gone
    without a FIN): within the read timeout the answer is `interrupted`
    (`upstream_stalled`) with the six words, never retried."""
    api, proxy = through_proxy(Fault.half_open(b"w05"))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.INTERRUPTED
    assert (message.content, message.error_code) == (SIX_WORDS, "upstream_stalled")
    assert read.text(assistant_id) == SIX_WORDS
    assert ended(read, assistant_id) == ("interrupted", "upstream_stalled")
    assert proxy.connections == 1
    assert at - proxy.faults_started[0] < READ_TIMEOUT + SLACK


def test_half_open_before_the_response_is_retried_then_fails(through_proxy):
    """The upstream never answers, on every connection: three tries of one read timeout
    each, then `failed` (`upstream_timeout`), within 3 x the read timeout and backoff."""
    api, proxy = through_proxy(Fault.half_open(0))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.FAILED
    assert (message.content, message.error_code) == ("", "upstream_timeout")
    assert ended(read, assistant_id) == ("failed", "upstream_timeout")
    assert proxy.connections == 1 + MAX_RETRIES
    assert at - proxy.faults_started[0] < (1 + MAX_RETRIES) * READ_TIMEOUT + BACKOFF + SLACK


def test_slow_close_after_message_stop_is_complete(through_proxy):
    """Everything up to `message_stop` arrives, then the end of the body and the FIN are
    held for 60 s: the answer is `complete` with its full text, long before the FIN
    and without waiting for a read timeout to call it a stall."""
    api, proxy = through_proxy(Fault.slow_close(b"event: message_stop", 60.0))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert (message.content, message.error_code) == (TEXT, "")
    assert read.text(assistant_id) == TEXT
    assert ended(read, assistant_id) == ("complete", None)
    assert at - proxy.faults_started[0] < SLACK


def test_slow_close_before_message_stop_is_interrupted_never_complete(through_proxy):
    """After the sixth delta nothing more is forwarded, and the FIN follows 1 s later:
    the body ended without `message_stop`, so the answer is `interrupted`
    (`upstream_disconnected`) with the six words, not `complete`."""
    api, proxy = through_proxy(Fault.slow_close(b"w05", 1.0))
    assistant_id, read, at = answer(api)
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.INTERRUPTED
    assert (message.content, message.error_code) == (SIX_WORDS, "upstream_disconnected")
    assert read.text(assistant_id) == SIX_WORDS
    assert ended(read, assistant_id) == ("interrupted", "upstream_disconnected")
    assert proxy.connections == 1
    assert at - proxy.faults_started[0] < 1.0 + SLACK
