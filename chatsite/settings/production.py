"""Production: secrets are required, HTTPS only, cookies are secure, static files are hashed."""

from __future__ import annotations

from chatsite.env import proxy_ssl_header
from chatsite.secret_key import require_strong

from .base import *  # noqa: F403
from .base import env

# No default: refuse to start without a key, or with one short enough to guess.
SECRET_KEY = require_strong(env.str("DJANGO_SECRET_KEY"))
DEBUG = False
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

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
