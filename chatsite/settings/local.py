"""Laptop defaults: debug on, a throwaway secret, SQLite, in-memory layer, demo model."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = SECRET_KEY or "django-insecure-local-development-only"
# Serve static files straight from the app directories; no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
