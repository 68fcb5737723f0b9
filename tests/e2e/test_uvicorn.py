"""The site on uvicorn (`chatsite.uvicorn_server`), the supported alternative to daphne.

The same contract as on daphne: answers stream through the real SDK, stream
tokens never reach the access log, the supervisor runs from the start (lifespan),
and SIGTERM drains — runs that can finish do, the rest end `interrupted`, open
streams close so their browsers resume elsewhere — before the process exits.
"""

from __future__ import annotations

import time

import httpx
import pytest

from chat.models import Message

from .client import ChatApi, fake, wait_for_final
from .test_failures import (
    READ_TIMEOUT,
    assistant_id_of,
    read_until_closed,
    terminate_quietly,
    wait_until_streaming,
    words,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def uvicorn_site(start_daphne, fake_anthropic):
    from tests.conftest import claude_env

    server = start_daphne(server="uvicorn", **claude_env(fake_anthropic, CHAT_DRAIN_SECONDS="2"))
    yield server
    terminate_quietly(server)


def test_answer_streams_and_the_token_stays_out_of_the_access_log(uvicorn_site, user, password):
    api = ChatApi(uvicorn_site.url, user.username, password)
    conv = api.create_conversation()
    text = "On **uvicorn**: U+2028:\u2028 done 🚀 " + words("u", 20)
    assistant_id, read = api.send_and_read(conv["id"], f"Hi {fake(text=text, tps=50)}")
    message = wait_for_final(assistant_id)
    assert message.status == Message.Status.COMPLETE
    assert read.text(assistant_id) == message.content == text
    assert len(read.of("delta")) > 3

    token = api.stream_url(conv["id"]).split("token=")[1]
    refused = f"{uvicorn_site.url}/stream/conversations/{conv['id']}/?token={token}x&y=1"
    assert httpx.get(refused, timeout=5).status_code == 401
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline and "token=[redacted]&y=1" not in uvicorn_site.log.read_text()
    ):
        time.sleep(0.1)
    log = uvicorn_site.log.read_text()
    assert f"/stream/conversations/{conv['id']}/?token=[redacted]&y=1" in log
    assert token not in log


def test_sigterm_drains_runs_and_closes_streams_before_exiting(uvicorn_site, user, password):
    api = ChatApi(uvicorn_site.url, user.username, password)
    long_text, short_text = words("L", 80), words("s", 16)  # 10 s at 8/s; 0.8 s at 20/s
    long_conv, short_conv = api.create_conversation(), api.create_conversation()
    with api.stream(long_conv["id"], timeout=READ_TIMEOUT) as viewer:
        long_id = assistant_id_of(api.send(long_conv["id"], f"Long {fake(text=long_text, tps=8)}"))
        assert viewer.read(max_events=3).text(long_id)
        short_id = assistant_id_of(
            api.send(short_conv["id"], f"Short {fake(text=short_text, tps=20)}")
        )
        wait_until_streaming(short_id)

        uvicorn_site.process.terminate()
        terminated_at = time.monotonic()
        _, closed = read_until_closed(viewer, until_end_of=long_id)
        # Left to itself uvicorn would wait for this open stream forever. (After a
        # graceful shutdown it re-raises the signal, so the exit status is -SIGTERM.)
        uvicorn_site.process.wait(timeout=2 + 5)
    assert time.monotonic() - terminated_at < 2 + 5
    log = uvicorn_site.log.read_text()
    assert "draining: 2 runs, 1 streams" in log
    assert "Application shutdown complete" in log
    assert "Finished server process" in log
    assert closed or Message.objects.get(pk=long_id).status == Message.Status.INTERRUPTED

    short = wait_for_final(short_id, timeout=5)
    assert (short.status, short.content) == (Message.Status.COMPLETE, short_text)
    long = wait_for_final(long_id, timeout=5)
    assert long.status == Message.Status.INTERRUPTED
    assert long.error_code == "server_shutdown"
    assert long.content and long_text.startswith(long.content) and long.content != long_text
