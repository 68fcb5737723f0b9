"""Production: secrets, hosts, PostgreSQL and Redis are required, HTTPS only, cookies are
secure, static files are hashed.

Each missing variable stops the process at start with ImproperlyConfigured naming it,
instead of a site that starts and then fails (or quietly serves each stream from one
process only).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from chatsite.env import proxy_ssl_header, required, single_process
from chatsite.secret_key import require_strong

from .base import *  # noqa: F403
from .base import DATABASES, REDIS_URL, env

# No default: refuse to start without a key, or with one short enough to guess.
SECRET_KEY = require_strong(env.str("DJANGO_SECRET_KEY"))
DEBUG = False
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Who the site is. No default: a production site answers only its own names.
required("DJANGO_ALLOWED_HOSTS", "the host names the site is reached by, e.g. chat.example.com")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")


def https_origins(hosts: list[str]) -> list[str]:
    """`https://` plus each allowed host (`.example.com` → `https://*.example.com`; `*`
    trusts no origin of its own)."""
    return [
        f"https://*{host}" if host.startswith(".") else f"https://{host}"
        for host in hosts
        if host != "*"
    ]


# Django checks a form's Origin against the request's own scheme and host, which nginx
# passes on (Host, X-Forwarded-Proto); trusting the allowed hosts over HTTPS also covers a
# proxy that rewrites Host. DJANGO_CSRF_TRUSTED_ORIGINS replaces the list.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=https_origins(ALLOWED_HOSTS))
# The proxy sets Host itself (`proxy_set_header Host $host`), so X-Forwarded-Host, which a
# client could send through a proxy that does not overwrite it, is not read.
USE_X_FORWARDED_HOST = False

# --- Shared state. Several processes share one PostgreSQL and one Redis (README,
# "Several processes, several machines"); a site that is one process on purpose says so.
required("DATABASE_URL", "postgres://user:password@host:5432/name")
if not single_process():
    if "postgresql" not in DATABASES["default"]["ENGINE"]:
        raise ImproperlyConfigured(
            "DATABASE_URL must be PostgreSQL: several processes cannot share SQLite "
            "(set CHAT_SINGLE_PROCESS=1 for a site that is one process)"
        )
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "REDIS_URL must be set: processes share live streams, replay and limits through "
            "Redis (set CHAT_SINGLE_PROCESS=1 for a site that is one process)"
        )

# --- HTTPS. The site runs behind a proxy that terminates TLS and says so in a header
# (which the proxy must set itself, never pass on from the client). Plain HTTP is
# redirected to HTTPS, and browsers are told (HSTS) to use nothing else. Both can be
# turned off for a deployment that serves plain HTTP on purpose (the benchmark does).
SECURE_PROXY_SSL_HEADER = proxy_ssl_header()
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "chatsite.storage.StaticFilesStorage"},
}
