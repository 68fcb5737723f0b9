"""Django's PostgreSQL backend, with a pool that recovers from a restart at once.

Connections die while they sit in the pool when the server restarts or fails over,
or an administrator ends their backends (`pg_terminate_backend`): then every idle
connection is dead at once. Django can have the pool (psycopg_pool) check each
connection before handing it out (`CONN_HEALTH_CHECKS`), but psycopg_pool pauses
between failed checks, 1 s, then 2 s, 4 s, … (psycopg ticket 709, against a busy
loop): a caller walks the dead connections one pause at a time. Measured here with
four idle connections terminated, a checkout took 7.6 s; in the end-to-end test the
runs' database thread waited out the pool's whole 10 s timeout, and every run's
checkpoints and final saves with it.

So this backend checks a connection itself as the pool hands it out, and when one is
dead it has the pool check all its idle connections at once (psycopg_pool's
`check()`: the dead are discarded and replaced), then takes another. Django's own
`CONN_HEALTH_CHECKS` stays off, or the pool would check (and pause) first.

The check costs no round trip unless something is wrong: an idle connection has
nothing to read, so a socket with data (or an end) waiting holds the server's last
words — "terminating connection", a reset — and only then is the connection tried
with an empty query (psycopg_pool's `check_connection`). A round trip on every
checkout made the test of 200 random reconnects slower on this loaded two-core
machine, 44 s against 40-41 s (two runs each; every round trip waits for the
database's process to be scheduled); with this check it took 37-41 s.
"""

from __future__ import annotations

import logging
import select

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

# A dead connection right after the pool was checked means the server is going away
# again (or still): the caller then gets the error, after this many tries.
_TRIES = 3


def is_dead(connection: psycopg.Connection) -> bool:
    """Whether an idle connection from the pool can no longer be used."""
    if connection.closed or connection.broken:
        return True
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        if not poller.poll(0):
            return False  # nothing came from the server since it was last used
    except (OSError, psycopg.Error, AttributeError):  # no poll() (Windows): ask
        pass
    try:
        ConnectionPool.check_connection(connection)
    except psycopg.Error:
        return True
    return False


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        pool = self.pool
        for tries in range(1, _TRIES + 1):
            connection = super().get_new_connection(conn_params)
            if pool is None or not is_dead(connection):
                return connection
            pool.putconn(connection)  # broken: the pool discards it and opens another
            if tries == _TRIES:
                raise base.Database.OperationalError("no live connection in the pool")
            logger.warning("a pooled database connection was dead: checking them all")
            pool.check()
        raise AssertionError("unreachable")
