"""Tests: PostgreSQL (real), fast password hashing, an offline provider by default."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import (
    BASE_DIR,
    CHAT_PROVIDER,
    database_url,
    env,
    tune_sqlite,
    use_connection_pool,
)

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES = {
    "default": database_url(default="postgres://postgres@127.0.0.1:5432/chatsite"),
}
use_connection_pool(DATABASES["default"])
tune_sqlite(DATABASES["default"])
# A SQLite test database must be a file so the daphne process started by the
# end-to-end tests sees the same rows as the test process.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
if CHAT_PROVIDER["BACKEND"].endswith("DemoProvider"):
    CHAT_PROVIDER["OPTIONS"]["tokens_per_second"] = env.float(
        "CHAT_DEMO_TOKENS_PER_SECOND", default=200.0
    )
# Serve static files straight from the app directories; no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
