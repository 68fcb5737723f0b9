"""Database calls that outlive a dropped connection.

A PostgreSQL connection can end under a running process: the server restarts or
fails over, or an administrator ends its backend (`pg_terminate_backend`). Then

* a connection that died idle in the pool is found as the pool hands it out, and
  the pool's other idle connections are checked at once (`chatsite/postgresql/`):
  nothing fails;
* one that died under a statement fails that statement. For the run core's calls —
  a lost checkpoint or final save would lose an answer — `reconnecting` runs the call
  again, a bounded number of times, on a fresh connection. A request's statement is
  not retried (its transaction is gone with the connection): the request gets 503
  `database_unavailable` with Retry-After (`chatsite/middleware.py`).

Only calls that may run twice are retried: reads, and writes that either are
idempotent or can tell their own earlier success (the `attempt` they are given says
whether an earlier one may have been applied before the connection died), and never
inside an outer transaction, which died with its connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors of a connection that failed (closed, reset, ended by the server), as Django
# raises them. OperationalError also covers other transient failures (a lock or
# statement timeout, a serialization failure), which are worth a second try as well.
CONNECTION_ERRORS = (OperationalError, InterfaceError)

# Pauses before the second and third attempt. A terminated backend needs none (a new
# connection works at once); the pauses ride out a server that is just coming back.
_PAUSES = (0.05, 0.5)


def run_reconnecting(call: Callable[[int], T], *, name: str = "") -> T:
    """`call(attempt)` (attempt 0, then 1, 2 after a failed connection), its result."""
    for attempt in range(len(_PAUSES) + 1):
        try:
            return call(attempt)
        except CONNECTION_ERRORS as exc:
            if attempt == len(_PAUSES) or connection.in_atomic_block:
                raise
            logger.warning(
                "%s: the database connection failed (%s); again on a new one",
                name or getattr(call, "__name__", "database call"),
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            # Hand the broken connection back: the pool discards it, the next
            # statement gets a new one.
            with contextlib.suppress(DatabaseError):
                connection.close()
            time.sleep(_PAUSES[attempt])
    raise AssertionError("unreachable")


def reconnecting(call: Callable[..., T]) -> Callable[..., T]:
    """Decorate a database call that may simply run again (a read, an idempotent write)."""

    @functools.wraps(call)
    def wrapper(*args, **kwargs) -> T:
        return run_reconnecting(lambda _: call(*args, **kwargs), name=call.__qualname__)

    return wrapper
