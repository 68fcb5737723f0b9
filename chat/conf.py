"""chatsite's own settings, with their defaults, in one place (the way DRF's `api_settings` is).

A site's settings module names only what it changes (`CHAT_CHECKPOINT_INTERVAL = 1.0`);
everything else comes from `DEFAULTS` below. Values are read from Django's settings on
every access, so `override_settings` and pytest-django's `settings` fixture just work,
and nothing is read at import time.

The environment variable of each setting has the same name (see `chatsite/env.py`).
"""

from __future__ import annotations

from django.conf import settings

# The models an install offers (`CHAT_MODELS`, see chat/catalog.py): each with the id the
# provider is sent, a label for people, its context window and its longest answer, in
# tokens. The site's settings offer Claude's with an API key and the demo model without.
DEMO_MODELS: list[dict] = [
    {"id": "demo", "label": "demo model", "context_tokens": 200_000, "max_output_tokens": 4096},
]
CLAUDE_MODELS: list[dict] = [
    {
        "id": "claude-sonnet-4-5",
        "label": "Claude Sonnet 4.5",
        "context_tokens": 200_000,
        "max_output_tokens": 64_000,
    },
    {
        "id": "claude-haiku-4-5",
        "label": "Claude Haiku 4.5",
        "context_tokens": 200_000,
        "max_output_tokens": 64_000,
    },
    {
        "id": "claude-opus-4-5",
        "label": "Claude Opus 4.5",
        "context_tokens": 200_000,
        "max_output_tokens": 64_000,
    },
]

DEFAULTS: dict[str, object] = {
    # The models conversations may use (see above), and the one new conversations use:
    # `MODEL` if it names one of them, else the first.
    "MODELS": DEMO_MODELS,
    "MODEL": None,
    # Caps on every model's figures: an answer's `max_tokens` is the smaller of this and
    # the model's `max_output_tokens`, and the history sent with it is cut to fit the
    # smaller of `CONTEXT_TOKENS` and the model's `context_tokens` (chat/context.py).
    "MAX_TOKENS": 4096,
    "CONTEXT_TOKENS": 200_000,
    "MAX_MESSAGE_CHARS": 32_000,
    # Tokens (input + output) each user may use per UTC day; None or 0: no limit.
    # Checked before each send and regenerate (see chat/budget.py).
    "DAILY_TOKEN_BUDGET": None,
    # Backends: {"BACKEND": dotted path, "OPTIONS": {...}} (see chat/backends.py). The
    # site's settings choose Redis ones when REDIS_URL is set, and the real model when
    # ANTHROPIC_API_KEY is.
    "PROVIDER": {"BACKEND": "chat.providers.demo.DemoProvider", "OPTIONS": {}},
    "REPLAY_BUFFER": {"BACKEND": "chat.replay.InMemoryReplayBuffer", "OPTIONS": {}},
    "STREAM_SLOTS": {"BACKEND": "chat.limits.InMemoryStreamSlots", "OPTIONS": {}},
    # Threads that run requests' sync code (middleware, DRF views), reused across
    # requests: see chatsite/handlers.py. Few, because they share one GIL with the event
    # loop: at 100 streams, 4 instead of 8 halved the relay's median latency (25 -> 11 ms)
    # and gave 8% more tokens/s; 2 halved it again, but then two slow stops (which wait up
    # to 2 s for the run's final save) would hold every thread.
    "REQUEST_THREADS": 4,
    # Runs' text is saved to the database at most this often (one statement for all of
    # a process's runs); the first save of an answer waits one interval.
    "CHECKPOINT_INTERVAL": 0.5,
    # With Redis: how long run output waits to be sent, so that one pipelined flush
    # carries every run's buffer writes and live events (see chat/outbox.py). At 50
    # tokens/s per answer, 50 ms makes it about 0.8 Redis commands per token (20 ms: 1.8)
    # and a third less CPU per token; one process alone applies events at once.
    "FLUSH_SECONDS": 0.05,
    # Admission: a send is refused at once (503, Retry-After) when this process has as
    # many answers running as it may: a limit that starts here, grows while the process
    # has CPU to spare and backs off when it uses more than this share of its one core,
    # never above the maximum (chat/runs/process.py). Admitted streams stay fast instead
    # of every stream slowing.
    "ADMISSION_INITIAL_RUNS": 100,
    "ADMISSION_MAX_CPU": 0.75,
    "MAX_RUNS_PER_PROCESS": 500,
    "SSE_RETRY_MS": 2000,
    # A `: ping` at least this often; also how long a client may leave what is written
    # to its stream untaken before the server drops it (chatsite/transport.py).
    "SSE_HEARTBEAT_SECONDS": 15.0,
    # A message in flight that a stream hears nothing about for this long is looked
    # up in stored state (the channel layer is at-most-once: its end may be lost).
    "SSE_QUIET_SECONDS": 3.0,
    # Runs hold a lease renewed every heartbeat; a run whose lease lapses (its
    # process died) is ended `interrupted` by any process's sweeper.
    "RUN_LEASE_SECONDS": 15.0,
    "RUN_HEARTBEAT_SECONDS": 5.0,
    "DRAIN_SECONDS": 20.0,
    # Connections (chatsite/transport.py, applied by both servers): a request's headers
    # must be complete this long after the connection opens or the request's first
    # byte arrives (slowloris); an idle keep-alive connection is closed after this long.
    "HTTP_HEADER_TIMEOUT_SECONDS": 10.0,
    "HTTP_KEEPALIVE_SECONDS": 20.0,
    # Whether this process ends other processes' orphaned runs. Every process of a
    # site should; only a process that shares a database with another site (as the
    # tests' servers do) must not.
    "SWEEP_ORPHANS": True,
    # Every Redis operation of the chat backends gives up after this long.
    "REDIS_TIMEOUT_SECONDS": 2.0,
    "REPLAY_TTL_SECONDS": 300.0,
    "MAX_STREAMS_PER_USER": 20,
    # Stream tokens live this long (at most 5 minutes: they travel in URLs).
    "STREAM_TOKEN_LIFETIME_SECONDS": 120,
    # Messages per page: the conversation page renders about this many of the latest
    # (rounded out to whole turns) and loads older ones this many at a time as the reader
    # scrolls up; it is also the messages API's default page size. The whole history of
    # 2,000 messages of 2 KB was 14 MB of HTML and 4.6 s of a request thread per view.
    "MESSAGE_PAGE_SIZE": 50,
    # The largest `page_size` an API client may ask for (more is a 400).
    "MESSAGE_PAGE_SIZE_MAX": 200,
    # Who may read `/metrics` (chatsite/probes.py): addresses or networks (CIDR) of
    # the connection itself; everyone else gets the site's 404. Prometheus scrapes each
    # process directly, never through the proxy.
    "METRICS_ALLOWED_IPS": ["127.0.0.1/32", "::1/128"],
    # How long each of `/readyz`'s checks (database, Redis) may take before it fails.
    "HEALTH_TIMEOUT_SECONDS": 1.0,
    # Whether logs may hold what users and the model wrote (Django's SQL debug log with
    # its parameters): off, so a log shipped elsewhere holds no conversation.
    "LOG_MESSAGE_CONTENT": False,
}

_MAX_STREAM_TOKEN_LIFETIME_SECONDS = 300


class ChatSettings:
    """`chat_settings.CHECKPOINT_INTERVAL` is `settings.CHAT_CHECKPOINT_INTERVAL` or its default."""

    def __getattr__(self, name: str):
        if name not in DEFAULTS:
            raise AttributeError(f"No chat setting {name!r}")
        value = getattr(settings, f"CHAT_{name}", DEFAULTS[name])
        if name == "STREAM_TOKEN_LIFETIME_SECONDS":
            value = min(int(value), _MAX_STREAM_TOKEN_LIFETIME_SECONDS)
        return value


chat_settings = ChatSettings()
