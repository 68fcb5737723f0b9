"""Laptop defaults: debug on, this install's own secret, SQLite, in-memory layer, demo model."""

from __future__ import annotations

from chatsite.env import secret_key_file
from chatsite.secret_key import install_secret_key

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Generated on first run and kept in a git-ignored file (DJANGO_SECRET_KEY_FILE): a key
# in the repository would let anyone forge tokens for every local install.
SECRET_KEY = SECRET_KEY or install_secret_key(secret_key_file())
# Serve static files straight from the app directories; no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
