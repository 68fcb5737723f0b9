"""The API examples in docs/examples/ run against a real server and do what they say.

The Python example (httpx + httpx-sse) runs here as a subprocess, exactly as its docstring
tells a reader to run it; the JavaScript one runs in Chromium (tests/browser/test_examples.py,
beside the shared browser).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from chat.models import Message
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PYTHON_EXAMPLE = ROOT / "docs" / "examples" / "python" / "chat_client.py"


@pytest.fixture(scope="module")
def daphne_paced_demo(start_daphne):
    """The demo model at 40 tokens/s: its answer (about 150 tokens) streams for ~4 s, so
    a drop and a stop land mid-answer, as they would for a reader."""
    return start_daphne(ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="40")


def answers_in(output: str) -> list[dict]:
    """The example's two `==` lines per answer: id, status, length; then the text."""
    found = re.findall(
        r"^== answer (\S+): (\w+), (\d+) characters; stored: (\w+), same text: (\w+)\n"
        r"== text: (.*)$",
        output,
        re.MULTILINE,
    )
    return [
        {"id": i, "status": s, "length": int(n), "same": same, "text": json.loads(text)}
        for i, s, n, _, same, text in found
    ]


def test_the_python_example_streams_resumes_without_gap_or_repeat_and_stops(
    daphne_paced_demo, user, password
):
    """The example's first answer is cut after 40 characters and resumed with
    `Last-Event-ID`: the text it assembled is exactly the stored answer. Its second answer
    is stopped mid-stream: `cancelled`, with exactly the stored partial text."""
    run = subprocess.run(
        [sys.executable, str(PYTHON_EXAMPLE), daphne_paced_demo.url, user.username, password],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    first, second = answers_in(run.stdout)

    resumed = re.search(
        r"^== connection dropped; resuming with Last-Event-ID (\S+):(\d+)$",
        run.stdout,
        re.MULTILINE,
    )
    assert resumed, run.stdout
    assert resumed[1] == first["id"]
    stored = Message.objects.get(pk=first["id"])
    assert stored.status == first["status"] == "complete"
    # Cut mid-answer: the resume position is inside the text, not at its end.
    assert 40 <= int(resumed[2]) < len(stored.content)
    assert first["text"] == stored.content  # nothing missing, nothing repeated
    assert first["length"] == len(stored.content) and first["same"] == "True"
    # The deltas were printed as they arrived, around the drop notice.
    assert run.stdout.index(stored.content[:20]) < resumed.start()

    assert "== stop requested: the answer is cancelled" in run.stdout
    stopped = Message.objects.get(pk=second["id"])
    assert stopped.status == second["status"] == "cancelled"
    assert second["text"] == stopped.content and second["same"] == "True"
    assert 40 <= len(stopped.content) < len(stored.content)


def load_example():
    spec = importlib.util.spec_from_file_location("chat_client_example", PYTHON_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_python_examples_reader_skips_stream_events_and_catches_gaps(capsys):
    """Events about the stream (`auth_revoked`, whose `message` is a string) and other
    messages are skipped; `reset` starts the message again; a delta whose position does
    not follow the text assembled so far is refused."""
    example = load_example()
    answer = example.Answer("m1")
    events = [
        ("message_start", {"message": {"id": "m0", "role": "assistant"}}, "m0:0"),
        ("delta", {"message_id": "m1", "text": "Hel"}, "m1:3"),
        ("error", {"message_id": None, "code": "auth_revoked", "message": "Signed out."}, ""),
        ("reset", {"reason": "position_beyond_text", "message": "Again."}, ""),
        ("message_start", {"message": {"id": "m1", "role": "assistant"}}, "m1:0"),
        ("delta", {"message_id": "m1", "text": "Hello"}, "m1:5"),
        ("message_end", {"message_id": "m1", "status": "complete"}, "m1:end"),
    ]
    assert answer.read(iter(events)) is True
    assert (answer.text, answer.status, answer.last_event_id) == ("Hello", "complete", "m1:end")

    repeated = example.Answer("m1")
    with pytest.raises(AssertionError, match="gap or repeat at m1:4"):  # "l" sent twice
        repeated.read(iter([events[1], ("delta", {"message_id": "m1", "text": "lo"}, "m1:4")]))
