"""The secret key: this install's own for local settings, a strong one for production.

The secret key signs sessions, password-reset links and every JWT (simplejwt's
`SIGNING_KEY` defaults to it): whoever knows it can forge an admin's access token
or a stream token for any conversation. So no key is ever in the repository.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured


def install_secret_key(path: Path) -> str:
    """This install's secret key, kept in `path`; made on first use.

    The file is written whole under a temporary name (readable by its owner only) and
    linked into place, which fails if it exists: two processes starting at once agree
    on the first one's key, and none ever reads a half-written file.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    from django.core.management.utils import get_random_secret_key  # not at settings import

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(get_random_secret_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it, and a new key is made.")
    return key


def require_strong(key: str) -> str:
    """`key`, if it is as strong as Django's deploy check asks (security.W009)."""
    if (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or key.startswith(SECRET_KEY_INSECURE_PREFIX)
    ):
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} random characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    return key
