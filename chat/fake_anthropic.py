"""A fake Anthropic Messages API server that speaks the real streaming wire protocol.

Why this exists: the real API is unreachable from the machines that run our tests,
development servers and benchmarks, yet the code that talks to it must be exercised
with the *official* ``anthropic`` SDK, not with mocks of it. This server answers
``POST /v1/messages`` the way the real API does -- same JSON shapes, same SSE event
sequence, same error bodies and status codes -- so ``AsyncAnthropic(base_url=...)``
works unchanged against it, including ``messages.stream(...).text_stream``,
``get_final_message()`` and ``messages.create(stream=True)``.

One server process serves every test case: the last user message may carry a
directive such as ``[[fake:tokens=5,tps=0]]`` or ``[[fake:status=529,fail_times=1]]``
that changes what that one request gets back (see ``Directives`` below). Faults that
are hard to produce against a real server -- a mid-stream ``error`` event, a TCP
connection dropped mid-body, a stream that stalls -- are directives too.

It is built on ``aiohttp.web`` with no Django imports so it starts in a fraction of a
second and can be the upstream for benchmarks with thousands of concurrent streams:
event bytes are encoded once and cached, each event is one ``write``, and nothing is
logged per token.

Run it with ``python -m chat.fake_anthropic --port 8099`` (``--port 0`` picks a free
port; the ``fake-anthropic listening on http://HOST:PORT`` line tells which) or
``python manage.py fake_anthropic --port 8099``.

Directives
----------
Write ``[[fake:KEY=VALUE,KEY=VALUE]]`` (a bare ``KEY`` for flags) anywhere in the text
of the last user message. Several directives in one message are merged. They
override the server's ``FakeConfig`` for that request only:

``tokens=N``            number of text deltas of the generated answer
``tps=R``               deltas per second; ``0`` sends them without delay
``text=B64``            answer text, base64url of UTF-8 (padding optional), sent in
                        deltas of ``chunk=N`` characters (default 4)
``stamp``               each delta is ``"<seq>@<send time, 6 decimals> "`` (seq from 1)
``status=S``            answer with HTTP error ``S`` (429, 529, 500, ...) before any
                        stream, with a ``retry-after: <retry_after>`` header (default 1)
``fail_times=N``        with ``status``: only the first N requests carrying the same
                        directive string fail, later ones succeed (default: all fail)
``error_after=K``       after K deltas send an ``event: error`` (overloaded_error) and
                        end the response cleanly
``disconnect_after=K``  after K deltas drop the TCP connection mid-body
``stall_after=K``       after K deltas send nothing more, for ``stall_seconds`` (1 h) or
                        until the client leaves
``truncate_after=K``    after K deltas end the response cleanly, without ``message_stop``
``id=LABEL``            ignored; makes a directive string unique so ``fail_times``
                        counts for one test don't leak into another

Precedence: a directive ``text`` beats a directive ``tokens``, which beats the server's
``--text``, which beats the server's ``--tokens``. ``stamp`` beats all of them.
Whatever the source, the answer is cut to the request's ``max_tokens`` deltas with
``stop_reason: "max_tokens"``.

Observability: ``GET /_fake/stats`` returns request/stream counters and the last request
body; ``POST /_fake/reset`` zeroes them (and the ``fail_times`` bookkeeping).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import json
import random
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from aiohttp import web

__all__ = [
    "FakeConfig",
    "FakeStats",
    "add_arguments",
    "config_from_args",
    "create_app",
    "main",
    "parse_directives",
    "run",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099

# How long a `stall_after` stream stays silent before giving up, unless the client
# leaves first. Long enough that any client read timeout fires before it.
DEFAULT_STALL_SECONDS = 3600.0

# While sleeping between tokens (or stalling) we re-check the connection this often,
# so a departed client is noticed even when the app runs without handler
# cancellation (e.g. under aiohttp's test server). Short token gaps are one sleep.
_DISCONNECT_POLL_SECONDS = 0.1


# --------------------------------------------------------------------------- config


@dataclass
class FakeConfig:
    """Server-wide defaults. Every fault field can also be set per request by a directive.

    ``None`` for a fault field means "no fault". Field names match directive keys,
    except ``tokens_per_second`` whose directive key is ``tps``.
    """

    tokens: int = 50
    tokens_per_second: float = 50.0
    text: str | None = None
    chunk: int = 4
    status: int | None = None
    retry_after: float = 1.0
    fail_times: int | None = None
    error_after: int | None = None
    disconnect_after: int | None = None
    truncate_after: int | None = None
    stall_after: int | None = None
    stamp: bool = False
    stall_seconds: float = DEFAULT_STALL_SECONDS


@dataclass
class FakeStats:
    """Counters exposed at ``GET /_fake/stats`` so tests can see what the upstream saw."""

    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    client_disconnects: int = 0
    active_streams: int = 0
    last_request: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self) -> None:
        """Zero the counters in place (running handlers hold a reference to this object).

        ``active_streams`` is a gauge, not a counter: streams still running will
        decrement it when they end, so it is kept.
        """
        for f in fields(self):
            if f.name != "active_streams":
                setattr(self, f.name, f.default)


@dataclass
class _State:
    config: FakeConfig
    stats: FakeStats = field(default_factory=FakeStats)
    # How many requests have carried each distinct directive string; drives `fail_times`.
    directive_hits: dict[str, int] = field(default_factory=dict)


_STATE = web.AppKey("fake_anthropic_state", _State)


# ----------------------------------------------------------------------- directives

_DIRECTIVE_RE = re.compile(r"\[\[fake:([^\]]*)\]\]")

# Directive key -> FakeConfig field, by value type.
_INT_KEYS = {
    "tokens": "tokens",
    "chunk": "chunk",
    "status": "status",
    "fail_times": "fail_times",
    "error_after": "error_after",
    "disconnect_after": "disconnect_after",
    "truncate_after": "truncate_after",
    "stall_after": "stall_after",
}
_FLOAT_KEYS = {
    "tps": "tokens_per_second",
    "retry_after": "retry_after",
    "stall_seconds": "stall_seconds",
}
_BOOL_WORDS = {"": True, "1": True, "true": True, "yes": True, "0": False, "false": False}


class DirectiveError(ValueError):
    """A malformed ``[[fake:...]]`` directive; answered with a 400 so typos are loud."""


def _directive_value(key: str, value: str) -> tuple[str, Any] | None:
    """Convert one ``key=value`` to ``(FakeConfig field, value)``; ``None`` if ignored."""
    if key in _INT_KEYS:
        return _INT_KEYS[key], int(value)
    if key in _FLOAT_KEYS:
        return _FLOAT_KEYS[key], float(value)
    if key == "text":
        padded = value + "=" * (-len(value) % 4)  # accept unpadded base64url
        return "text", base64.urlsafe_b64decode(padded).decode("utf-8")
    if key == "stamp":
        return "stamp", _BOOL_WORDS[value.lower()]
    if key == "id":
        return None  # a label only: it makes the directive string (the fail_times key) unique
    raise DirectiveError(f"unknown fake directive key {key!r}")


def parse_directives(text: str) -> tuple[str, dict[str, Any]]:
    """Find every ``[[fake:...]]`` in ``text``.

    Returns the raw directive string (the bodies joined with ``,``; the key that
    ``fail_times`` counts by) and the overrides as ``FakeConfig`` field names.
    Raises ``DirectiveError`` for an unknown key or a bad value.
    """
    bodies = _DIRECTIVE_RE.findall(text)
    overrides: dict[str, Any] = {}
    for body in bodies:
        for item in body.split(","):
            if not item.strip():
                continue
            # Split on the first "=" only: base64 padding may contain more.
            key, _, value = (part.strip() for part in item.partition("="))
            try:
                converted = _directive_value(key, value)
            except (ValueError, KeyError, binascii.Error) as exc:
                if isinstance(exc, DirectiveError):
                    raise
                raise DirectiveError(f"bad value for fake directive {key!r}: {value!r}") from exc
            if converted is not None:
                overrides[converted[0]] = converted[1]
    return ",".join(bodies), overrides


# ---------------------------------------------------------------- generated answers

# fmt: off
_WORDS = (
    "the", "stream", "server", "client", "token", "request", "response", "latency", "buffer",
    "event", "message", "answer", "model", "network", "retry", "error", "handler", "browser",
    "relay", "queue", "socket", "chunk", "header", "payload", "cache", "session", "timeout",
    "backoff", "connection", "protocol", "parser", "decoder", "sequence", "cursor", "simple",
    "fast", "reliable", "small", "steady", "careful", "every", "each", "first", "next", "final",
    "partial", "sends", "reads", "writes", "keeps", "drops", "checks", "returns", "handles",
    "waits", "closes", "opens", "resumes",
)
# fmt: on
_HEADINGS = ("Overview", "Details", "Example", "Summary", "Notes", "Caveats", "Steps")
_CODE_BLOCK = ("```python\n", "def ", "answer():\n", "    return ", "42\n", "```\n\n")


def _paragraph(rng: random.Random, low: int, high: int) -> list[str]:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    words[0] = words[0].capitalize()
    deltas = [w + " " for w in words]
    deltas[-1] = words[-1] + ".\n\n"
    return deltas


def _bullets(rng: random.Random) -> list[str]:
    deltas: list[str] = []
    for _ in range(3):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 3))]
        deltas.append("- ")
        deltas.extend(w + " " for w in words[:-1])
        deltas.append(words[-1] + "\n")
    deltas[-1] += "\n"
    return deltas


@functools.lru_cache(maxsize=64)
def generated_deltas(tokens: int) -> tuple[str, ...]:
    """A deterministic markdown-ish answer of exactly ``tokens`` deltas.

    Each delta is a word plus a trailing space or newline(s). A heading, a list and a
    code fence come early (within ~40 deltas) so the default answer exercises a
    markdown renderer. The answer for N tokens is a prefix of the one for N+1.
    """
    rng = random.Random(20240229)
    deltas: list[str] = []
    while len(deltas) < tokens:
        deltas += _paragraph(rng, 6, 9)
        deltas += ["## ", rng.choice(_HEADINGS) + "\n\n"]
        deltas += _bullets(rng)
        deltas += _CODE_BLOCK
        deltas += _paragraph(rng, 8, 14)
    return tuple(deltas[:tokens])


def _split_text(text: str, chunk: int) -> tuple[str, ...]:
    chunk = max(1, chunk)
    return tuple(text[i : i + chunk] for i in range(0, len(text), chunk))


# ------------------------------------------------------------------- wire encoding


def _dumps(obj: Any) -> str:
    # Compact separators like the real API; non-ASCII (emoji, U+2028) goes out as raw
    # UTF-8 rather than \u escapes, which is what the real API does and what a relay
    # must survive.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _sse(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: {_dumps(payload)}\n\n".encode()


# Events that never change are encoded once.
_BLOCK_START = _sse(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'  # the real API spaces this one
_BLOCK_STOP = _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _sse("message_stop", {"type": "message_stop"})
_MIDSTREAM_ERROR = _sse(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def _delta_event(text: str) -> bytes:
    return _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


@functools.lru_cache(maxsize=256)
def _encoded_plan(
    text: str | None, tokens: int, chunk: int
) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """Deltas of an answer (fixed ``text``, else generated) and their encoded events.

    Cached, so under benchmark load an answer is JSON-encoded once, not per stream.
    """
    deltas = generated_deltas(tokens) if text is None else _split_text(text, chunk)
    return deltas, tuple(_delta_event(d) for d in deltas)


# ----------------------------------------------------------------- request helpers


def _new_id(prefix: str) -> str:
    return prefix + "01" + secrets.token_hex(11)


def _error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


def _error_response(
    status: int,
    error_type: str,
    message: str,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    request_id = request_id or _new_id("req_")
    return web.json_response(
        _error_body(error_type, message, request_id),
        status=status,
        headers={"request-id": request_id, **(headers or {})},
        dumps=_dumps,
    )


_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (fake)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit (fake)."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _status_error(status: int) -> tuple[str, str]:
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if status >= 500:
        return "api_error", "Internal server error"
    return "invalid_request_error", f"Error {status} (fake)."


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _block_texts(content: Any) -> list[str]:
    """Text of a message's content: a plain string or a list of content blocks."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
    return []


def count_input_tokens(body: dict[str, Any]) -> int:
    """A rough input token count: whitespace-split words of system + all message texts."""
    texts = _block_texts(body.get("system"))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            texts += _block_texts(message.get("content"))
    return max(1, sum(len(t.split()) for t in texts))


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(_block_texts(message.get("content")))
    return ""


def _validate(body: Any) -> str | None:
    """The first validation problem, worded like the real API, or ``None``."""
    if not isinstance(body, dict):
        return "body: Input should be an object"
    model = body.get("model")
    if "model" not in body:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid string"
    max_tokens = body.get("max_tokens")
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Input should be an integer greater than or equal to 1"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    messages = body.get("messages")
    if "messages" not in body:
        return "messages: Field required"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be an object"
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{i}.content: Input should be a valid string or list"
    return None


class _ClientGone(Exception):
    """The client closed its connection while we were waiting."""


def _connection_closed(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pause(request: web.Request, seconds: float) -> None:
    """Sleep ``seconds``, raising ``_ClientGone`` promptly if the client leaves meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, _DISCONNECT_POLL_SECONDS))
        if _connection_closed(request):
            raise _ClientGone


async def _flush_then_abort(request: web.Request) -> None:
    """Drop the TCP connection mid-body, after what was written has left our buffer.

    ``abort()`` discards unsent buffered bytes, so we wait (briefly) for the buffer to
    drain first: the client must receive exactly the deltas sent before the fault.
    """
    transport = request.transport
    if transport is None:
        return
    for _ in range(200):
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    transport.abort()


# ------------------------------------------------------------------------- handler


@dataclass
class _Plan:
    """Everything one request will get, after directives are applied."""

    cfg: FakeConfig
    deltas: tuple[str, ...]
    events: tuple[bytes, ...]
    stop_reason: str
    input_tokens: int

    @property
    def count(self) -> int:
        return len(self.deltas)

    def fault_at(self, sent: int) -> str | None:
        """Which fault (if any) fires once ``sent`` deltas have gone out."""
        cfg = self.cfg
        if cfg.error_after is not None and sent == cfg.error_after:
            return "error"
        if cfg.disconnect_after is not None and sent == cfg.disconnect_after:
            return "disconnect"
        if cfg.stall_after is not None and sent == cfg.stall_after:
            return "stall"
        if cfg.truncate_after is not None and sent == cfg.truncate_after:
            return "truncate"
        return None


def _make_plan(base: FakeConfig, overrides: dict[str, Any], body: dict[str, Any]) -> _Plan:
    cfg = replace(base, **overrides)
    max_tokens: int = body["max_tokens"]
    if cfg.stamp:
        # Stamps carry their send time, so they are made while streaming; only the
        # count is planned here.
        total = max(0, cfg.tokens)
        deltas: tuple[str, ...] = ("",) * min(total, max_tokens)
        events: tuple[bytes, ...] = ()
    else:
        # A directive's `tokens` without `text` asks for a generated answer even when
        # the server was started with a fixed `--text`.
        use_text = "text" in overrides or ("tokens" not in overrides and cfg.text is not None)
        all_deltas, all_events = _encoded_plan(
            cfg.text if use_text else None, max(0, cfg.tokens), cfg.chunk
        )
        total = len(all_deltas)
        deltas, events = all_deltas[:max_tokens], all_events[:max_tokens]
    return _Plan(
        cfg=cfg,
        deltas=deltas,
        events=events,
        stop_reason="max_tokens" if total > max_tokens else "end_turn",
        input_tokens=count_input_tokens(body),
    )


def _has_credentials(request: web.Request) -> bool:
    """Any non-empty key is accepted; only a missing one is refused.

    The real API takes ``x-api-key`` or ``Authorization: Bearer``; SDK 2.x sends the
    latter even for ``api_key=``, so both must count.
    """
    if request.headers.get("x-api-key", "").strip():
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _stamp_text(seq: int) -> str:
    return f"{seq}@{time.time():.6f} "


async def messages_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    stats = state.stats
    stats.requests += 1
    request_id = _new_id("req_")

    raw = await request.read()
    bad_json: ValueError | None = None
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        body, bad_json = None, exc
    stats.last_request = body

    if not _has_credentials(request):
        return _error_response(
            401, "authentication_error", "x-api-key header is required", request_id
        )
    if bad_json is not None:
        return _error_response(
            400, "invalid_request_error", f"Invalid JSON in request body: {bad_json}", request_id
        )

    problem = _validate(body)
    if problem is not None:
        return _error_response(400, "invalid_request_error", problem, request_id)

    try:
        directive_key, overrides = parse_directives(_last_user_text(body["messages"]))
    except DirectiveError as exc:
        return _error_response(400, "invalid_request_error", str(exc), request_id)
    plan = _make_plan(state.config, overrides, body)
    cfg = plan.cfg

    if cfg.status is not None:
        hits = state.directive_hits.get(directive_key, 0) + 1
        state.directive_hits[directive_key] = hits
        if cfg.fail_times is None or hits <= cfg.fail_times:
            error_type, message = _status_error(cfg.status)
            return _error_response(
                cfg.status,
                error_type,
                message,
                request_id,
                headers={"retry-after": _format_seconds(cfg.retry_after)},
            )

    if body.get("stream") is True:
        return await _stream(request, plan, body["model"], request_id)
    return await _complete(request, plan, body["model"], request_id)


async def _stream(
    request: web.Request, plan: _Plan, model: str, request_id: str
) -> web.StreamResponse:
    stats = request.app[_STATE].stats
    cfg = plan.cfg
    resp = web.StreamResponse(
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "request-id": request_id,
        }
    )
    stats.streams_started += 1
    stats.active_streams += 1
    # Set when *we* drop the connection, so our own abort is not counted as the client's.
    aborted_by_us = False
    try:
        await resp.prepare(request)
        start = {
            "type": "message_start",
            "message": {
                "id": _new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": plan.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        }
        await resp.write(_sse("message_start", start))
        await resp.write(_BLOCK_START)
        await resp.write(_PING)

        loop = asyncio.get_running_loop()
        interval = 1.0 / cfg.tokens_per_second if cfg.tokens_per_second > 0 else 0.0
        t0 = loop.time()
        for sent in range(plan.count + 1):
            fault = plan.fault_at(sent)
            if fault == "error":
                await resp.write(_MIDSTREAM_ERROR)
                await resp.write_eof()
                return resp
            if fault == "disconnect":
                aborted_by_us = True
                await _flush_then_abort(request)
                return resp  # aiohttp's write_eof then fails quietly on the dead transport
            if fault == "stall":
                await _pause(request, cfg.stall_seconds)
                await resp.write_eof()
                return resp
            if fault == "truncate":
                await resp.write_eof()
                return resp
            if sent == plan.count:
                break
            if interval:
                # Pace against the stream's start, not the previous write, so slow
                # writes under load don't stretch the whole stream.
                delay = t0 + (sent + 1) * interval - loop.time()
                if delay > 0:
                    await _pause(request, delay)
            if cfg.stamp:
                await resp.write(_delta_event(_stamp_text(sent + 1)))
            else:
                await resp.write(plan.events[sent])

        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": plan.count},
        }
        await resp.write(_BLOCK_STOP)
        await resp.write(_sse("message_delta", delta))
        await resp.write(_MESSAGE_STOP)
        await resp.write_eof()
        stats.streams_completed += 1
        return resp
    except (_ClientGone, ConnectionError):
        # ClientConnectionResetError subclasses ConnectionResetError.
        if not aborted_by_us:
            stats.client_disconnects += 1
        return resp
    except asyncio.CancelledError:
        # With handler cancellation on (see `run`), a departed client cancels us.
        if not aborted_by_us:
            stats.client_disconnects += 1
        raise
    finally:
        stats.active_streams -= 1


async def _complete(
    request: web.Request, plan: _Plan, model: str, request_id: str
) -> web.StreamResponse:
    """Non-streaming answer: same content, delivered after the same generation time.

    Faults map to what a non-streaming client would see: `error_after` becomes a 529
    overloaded error, `disconnect_after` and `truncate_after` drop the connection with
    no response, and
    `stall_after` never answers.
    """
    stats = request.app[_STATE].stats
    cfg = plan.cfg
    interval = 1.0 / cfg.tokens_per_second if cfg.tokens_per_second > 0 else 0.0
    fault_at = next((n for n in range(plan.count + 1) if plan.fault_at(n)), None)
    produced = plan.count if fault_at is None else fault_at
    try:
        await _pause(request, produced * interval)
        fault = None if fault_at is None else plan.fault_at(fault_at)
        if fault == "error":
            error_type, message = _status_error(529)
            return _error_response(529, error_type, message, request_id)
        if fault in ("disconnect", "truncate"):
            await _flush_then_abort(request)
            return web.Response(status=500)  # never reaches the client
        if fault == "stall":
            await _pause(request, cfg.stall_seconds)
            return _error_response(500, "api_error", "Internal server error", request_id)
    except _ClientGone:
        stats.client_disconnects += 1
        return web.Response(status=499)
    except asyncio.CancelledError:
        stats.client_disconnects += 1
        raise

    if cfg.stamp:
        text = "".join(_stamp_text(seq) for seq in range(1, plan.count + 1))
    else:
        text = "".join(plan.deltas)
    message = {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": plan.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": plan.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": plan.count,
        },
    }
    return web.json_response(message, headers={"request-id": request_id}, dumps=_dumps)


async def stats_handler(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].stats.as_dict(), dumps=_dumps)


async def reset_handler(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    state.stats.reset()
    state.directive_hits.clear()
    return web.json_response(state.stats.as_dict(), dumps=_dumps)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes and methods answer in Anthropic's error shape, not aiohttp's text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error_response(404, "not_found_error", f"Not found: {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error_response(405, "invalid_request_error", f"Method {request.method} not allowed")


def create_app(config: FakeConfig | None = None) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_STATE] = _State(config=config or FakeConfig())
    app.router.add_post("/v1/messages", messages_handler)
    app.router.add_get("/_fake/stats", stats_handler)
    app.router.add_post("/_fake/reset", reset_handler)
    return app


# ---------------------------------------------------------------------------- serve


async def serve(host: str, port: int, config: FakeConfig) -> None:
    """Serve until SIGINT/SIGTERM. Prints the listening line (with the real port if 0)."""
    runner = web.AppRunner(
        create_app(config),
        access_log=None,  # no per-request logging: this is a benchmark upstream too
        handler_cancellation=True,  # a client leaving cancels its handler at once
        shutdown_timeout=1.0,
    )
    await runner.setup()
    # A deep backlog so thousands of benchmark streams can connect at once.
    site = web.TCPSite(runner, host, port, backlog=4096, shutdown_timeout=1.0)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port  # real port if 0
    print(f"fake-anthropic listening on http://{host}:{bound_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: FakeConfig | None = None
) -> None:
    asyncio.run(serve(host, port, config or FakeConfig()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options, shared by ``python -m`` and the Django management command."""
    d = FakeConfig()
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=d.tokens, help="text deltas per answer")
    parser.add_argument(
        "--tokens-per-second", type=float, default=d.tokens_per_second, help="0 = no delay"
    )
    parser.add_argument("--text", default=None, help="fixed answer text instead of generated")
    parser.add_argument("--chunk", type=int, default=d.chunk, help="chars per delta for --text")
    parser.add_argument("--stamp", action="store_true", help="deltas are '<seq>@<send time> '")
    # Default faults, applied to requests that carry no directive for them.
    parser.add_argument("--status", type=int, default=None)
    parser.add_argument("--retry-after", type=float, default=d.retry_after)
    parser.add_argument("--fail-times", type=int, default=None)
    parser.add_argument("--error-after", type=int, default=None)
    parser.add_argument("--disconnect-after", type=int, default=None)
    parser.add_argument("--stall-after", type=int, default=None)
    parser.add_argument("--truncate-after", type=int, default=None)
    parser.add_argument("--stall-seconds", type=float, default=d.stall_seconds)


def config_from_args(args: argparse.Namespace | dict[str, Any]) -> FakeConfig:
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return FakeConfig(
        **{f.name: values[f.name] for f in fields(FakeConfig) if values.get(f.name) is not None}
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chat.fake_anthropic",
        description="Fake Anthropic Messages API (streaming SSE) for tests and benchmarks.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(args.host, args.port, config_from_args(args))


if __name__ == "__main__":
    main(sys.argv[1:])
