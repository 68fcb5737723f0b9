"""The one place that reads the process environment.

Settings modules import `env` from here; nothing else in the project touches
`os.environ`, so every knob is listed in one file (and in the README).
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def database_url(default: str) -> dict:
    """`DATABASE_URL` parsed into a Django DATABASES entry."""
    return env.db_url("DATABASE_URL", default=default)


def redis_url() -> str | None:
    return env.str("REDIS_URL", default=None) or None


def anthropic_api_key() -> str | None:
    return env.str("ANTHROPIC_API_KEY", default=None) or None
