"""The one place that reads the process environment.

Settings modules import `env` from here; nothing else in the project touches
`os.environ`, so every knob is listed in one file (and in the README).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def database_url(default: str) -> dict:
    """`DATABASE_URL` parsed into a Django DATABASES entry; set but empty is unset (an env
    file's `DATABASE_URL=` line), not a database without an engine."""
    if not env.str("DATABASE_URL", default="").strip():
        return env.db_url_config(default)
    return env.db_url("DATABASE_URL")


def secret_key_file() -> Path:
    """Where local settings keep this install's generated secret key (git-ignored)."""
    return Path(env.str("DJANGO_SECRET_KEY_FILE", default=str(BASE_DIR / ".django-secret-key")))


def proxy_ssl_header() -> tuple[str, str] | None:
    """`DJANGO_SECURE_PROXY_SSL_HEADER` ("Header-Name: value", default
    "X-Forwarded-Proto: https") as Django's `SECURE_PROXY_SSL_HEADER`; empty for none."""
    raw = env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default="X-Forwarded-Proto: https")
    if not raw.strip():
        return None
    name, colon, value = (part.strip() for part in raw.partition(":"))
    if not (colon and name and value):
        raise ImproperlyConfigured(
            f"DJANGO_SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https', not {raw!r}"
        )
    return "HTTP_" + name.upper().replace("-", "_"), value


def log_format() -> str:
    """`DJANGO_LOG_FORMAT`: `text` (the default, for people) or `json` (one object per
    line, for a log pipeline)."""
    value = env.str("DJANGO_LOG_FORMAT", default="text").strip().lower()
    if value not in ("text", "json"):
        raise ImproperlyConfigured(f"DJANGO_LOG_FORMAT must be text or json, not {value!r}")
    return value


def static_root() -> Path:
    """`DJANGO_STATIC_ROOT`: where collectstatic writes (a deployment's code directory may
    be read-only, as under chatsite@.service)."""
    return Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))


def required(name: str, why: str) -> str:
    """A variable production cannot start without: missing or empty stops the process,
    naming the variable."""
    value = env.str(name, default="").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set: {why}")
    return value


def single_process() -> bool:
    """`CHAT_SINGLE_PROCESS`: this site is one process, so production may run it without
    Redis and on SQLite (the benchmark's single-process setup). Off by default: a site of
    several processes that forgot `REDIS_URL` would serve each stream from one process only."""
    return env.bool("CHAT_SINGLE_PROCESS", default=False)


def redis_url() -> str | None:
    return env.str("REDIS_URL", default=None) or None


def anthropic_api_key() -> str | None:
    return env.str("ANTHROPIC_API_KEY", default=None) or None


# chatsite's own settings (defaults in chat/conf.py) that the environment may set,
# each under its own name, with its type.
_CHAT_SETTINGS = {
    # JSON: a list of {"id", "label", "context_tokens", "max_output_tokens"}.
    "CHAT_MODELS": dict,
    "CHAT_MODEL": str,
    "CHAT_MAX_TOKENS": int,
    "CHAT_MAX_MESSAGE_CHARS": int,
    "CHAT_CONTEXT_TOKENS": int,
    "CHAT_DAILY_TOKEN_BUDGET": int,
    "CHAT_REQUEST_THREADS": int,
    "CHAT_CHECKPOINT_INTERVAL": float,
    "CHAT_FLUSH_SECONDS": float,
    "CHAT_MAX_RUNS_PER_PROCESS": int,
    "CHAT_ADMISSION_MAX_CPU": float,
    "CHAT_ADMISSION_INITIAL_RUNS": int,
    "CHAT_SSE_RETRY_MS": int,
    "CHAT_SSE_HEARTBEAT_SECONDS": float,
    "CHAT_SSE_QUIET_SECONDS": float,
    "CHAT_RUN_LEASE_SECONDS": float,
    "CHAT_RUN_HEARTBEAT_SECONDS": float,
    "CHAT_DRAIN_SECONDS": float,
    "CHAT_HTTP_HEADER_TIMEOUT_SECONDS": float,
    "CHAT_HTTP_KEEPALIVE_SECONDS": float,
    "CHAT_SWEEP_ORPHANS": bool,
    "CHAT_REDIS_TIMEOUT_SECONDS": float,
    "CHAT_REPLAY_TTL_SECONDS": float,
    "CHAT_MAX_STREAMS_PER_USER": int,
    "CHAT_STREAM_TOKEN_LIFETIME_SECONDS": int,
    "CHAT_MESSAGE_PAGE_SIZE": int,
    "CHAT_MESSAGE_PAGE_SIZE_MAX": int,
    "CHAT_METRICS_ALLOWED_IPS": list,
    "CHAT_HEALTH_TIMEOUT_SECONDS": float,
    "CHAT_LOG_MESSAGE_CONTENT": bool,
}


def chat_settings_from_env() -> dict[str, object]:
    """The `CHAT_*` settings the environment sets (the rest keep chat/conf.py's defaults)."""
    readers = {
        str: env.str,
        int: env.int,
        float: env.float,
        bool: env.bool,
        list: env.list,
        dict: env.json,
    }
    values = {
        name: readers[kind](name) for name, kind in _CHAT_SETTINGS.items() if name in env.ENVIRON
    }
    if "CHAT_METRICS_ALLOWED_IPS" in values:
        _check_networks("CHAT_METRICS_ALLOWED_IPS", values["CHAT_METRICS_ALLOWED_IPS"])
    return values


def _check_networks(name: str, entries: list[str]) -> None:
    """A typo in an allow-list stops the process at start, not its first scrape."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {entry!r} is not an address or a network (10.0.0.0/8, ::1)"
            ) from None
