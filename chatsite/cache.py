"""Django's Redis cache, with one client (and connection pool) per process.

Under ASGI, Django keeps cache backends per request context, and each new `RedisCache`
builds its own client with its own connection pool: every request that touched the
cache (each send, through DRF's throttle) opened a new Redis connection (HELLO,
SELECT) and dropped it. redis-py's pools are thread-safe, so one client per server
list and options serves every request of the process.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict[str, object] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self):
        key = repr((self._servers, sorted(self._options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
        return client
