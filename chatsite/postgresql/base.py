"""Django's PostgreSQL backend, with a pool that recovers from a restart at once.

Connections die while they sit in the pool when the server restarts or fails over,
or an administrator ends their backends (`pg_terminate_backend`): then every idle
connection is dead at once. Django can have the pool (psycopg_pool) check each
connection before handing it out (`CONN_HEALTH_CHECKS`), but psycopg_pool pauses
between failed checks, 1 s, then 2 s, 4 s, … (psycopg ticket 709, against a busy
loop): a caller walks the dead connections one pause at a time. Measured here after
every backend was terminated, the runs' database thread waited out the pool's whole
10 s timeout, and every run's checkpoints and final saves with it.

So this backend checks a connection itself as the pool hands it out (the same empty
query), and when one is dead it has the pool check all its idle connections at once
(psycopg_pool's `check()`: the dead are discarded and replaced), then takes another.
It is `ENGINE` when `chatsite/settings/base.py` configures the pool; Django's own
`CONN_HEALTH_CHECKS` stays off, or the pool would check (and pause) first.
"""

from __future__ import annotations

import logging

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

# A dead connection right after the pool was checked means the server is going away
# again (or still): the caller then gets the error, after this many tries.
_TRIES = 3


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        pool = self.pool
        for tries in range(1, _TRIES + 1):
            connection = super().get_new_connection(conn_params)
            if pool is None:
                return connection
            try:
                ConnectionPool.check_connection(connection)
            except psycopg.Error as exc:
                pool.putconn(connection)  # broken: the pool discards it
                if tries == _TRIES:
                    raise
                logger.warning("a pooled database connection was dead (%s): checking all", exc)
                pool.check()
            else:
                return connection
        raise AssertionError("unreachable")
