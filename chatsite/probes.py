"""`/healthz`, `/readyz` and `/metrics`: answered by the ASGI handler before Django.

They are for load balancers, orchestrators and Prometheus, which need them

* whatever `Host` they send (a load balancer probes a process by its address, which
  is not in `ALLOWED_HOSTS`), over plain HTTP (no HTTPS redirect: the proxy in front
  terminates TLS, the probe does not go through it), with no session, no CSRF, no
  middleware at all;
* on the event loop, without one of the process's few request threads: a probe must
  not queue behind slow requests, and `/healthz` answering *is* the proof that the
  event loop runs.

`/readyz` is 200 while this process can serve: the database answers `SELECT 1`,
Redis (when the site uses it) answers PING, each within `CHAT_HEALTH_TIMEOUT_SECONDS`,
and the process is not draining. Otherwise 503 with `Retry-After` and the failed
checks in the API's error body. A load balancer that takes a process out on 503
stops sending it new connections while it drains, and while Redis is away (when
streams could not open there anyway).

`/metrics` is this process's Prometheus metrics (chat/metrics.py), for addresses in
`CHAT_METRICS_ALLOWED_IPS` (addresses or networks; default: this machine only) that
came straight to the process. Anyone else, and any request that came through a proxy
(it carries `X-Forwarded-For`, `Forwarded` or `X-Real-IP`), gets the site's ordinary
404, as if there were no such page: Django answers it. The address is the
connection's (`REMOTE_ADDR`): Prometheus scrapes each process directly.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chat.conf import chat_settings

OK = "ok"
_RETRY_AFTER_SECONDS = 5
_FORWARDED = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


async def _respond(scope, send, status: int, body: bytes, content_type: bytes, headers=()):
    response_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _json(scope, send, status: int, data: dict, headers=()) -> None:
    await _respond(scope, send, status, json.dumps(data).encode(), b"application/json", headers)


# --- /healthz -----------------------------------------------------------------------------


async def healthz(scope, send) -> None:
    """The process is alive: its event loop is running this."""
    await _json(scope, send, 200, {"status": OK})


# --- /readyz ------------------------------------------------------------------------------


async def readyz(scope, send) -> None:
    checks = await readiness()
    failed = [name for name, result in checks.items() if result != OK]
    if not failed:
        await _json(scope, send, 200, {"status": "ready", "checks": checks})
        return
    body = {
        "code": "not_ready",
        "message": f"This process cannot serve now: {', '.join(failed)}.",
        "checks": checks,
    }
    headers = [(b"retry-after", str(_RETRY_AFTER_SECONDS).encode())]
    await _json(scope, send, 503, body, headers)


async def readiness() -> dict[str, str]:
    """Each check's result: "ok", or why not."""
    from chat.runs import manager

    timeout = chat_settings.HEALTH_TIMEOUT_SECONDS
    database, redis = await asyncio.gather(_database(timeout), _redis(timeout))
    return {
        "database": database,
        "redis": redis,
        "accepting": "draining" if manager.draining else OK,
    }


_database_check: asyncio.Future | None = None


async def _database(seconds: float) -> str:
    """`SELECT 1` on a pooled connection. One check at a time: a database that hangs
    holds one thread of the shared pool, not one per probe."""
    global _database_check
    loop = asyncio.get_running_loop()
    check = _database_check
    if check is None or check.done() or check.get_loop() is not loop:
        check = _database_check = asyncio.ensure_future(_select_one())
    try:
        async with asyncio.timeout(seconds):
            await asyncio.shield(check)
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return OK


@functools.partial(database_sync_to_async, thread_sensitive=False)
def _select_one() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _redis(seconds: float) -> str:
    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return OK  # the site does not use Redis
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        async with asyncio.timeout(seconds):
            await client.ping()
    except TimeoutError:
        return "timeout"
    except (RedisError, OSError) as exc:
        return f"unavailable ({type(exc).__name__})"
    finally:
        await client.aclose()
    return OK


# --- /metrics -----------------------------------------------------------------------------


async def metrics(scope, send) -> None:
    # On the event loop: the gauges read the run manager's and the fan-out's state,
    # which only the loop changes.
    await _respond(scope, send, 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())


@functools.lru_cache(maxsize=8)
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in allowed)


def metrics_allowed(scope) -> bool:
    """The connection's own address is in `CHAT_METRICS_ALLOWED_IPS`, and no proxy
    forwarded the request."""
    if any(name in _FORWARDED for name, _ in scope.get("headers", ())):
        return False
    client = scope.get("client")
    if not client:
        return False  # a Unix socket: no address to check
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    networks = _networks(tuple(chat_settings.METRICS_ALLOWED_IPS))
    return any(address in network for network in networks)


Probe = Callable[..., Awaitable[None]]


def probe_for(scope) -> Probe | None:
    """The probe that answers this request, or None: Django handles it."""
    path = scope["path"]
    if path == "/metrics":
        if not metrics_allowed(scope):
            return None
        probe = metrics
    else:
        probe = {"/healthz": healthz, "/readyz": readyz}.get(path)
    if probe is not None and scope["method"] not in ("GET", "HEAD"):
        return _method_not_allowed
    return probe


async def _method_not_allowed(scope, send) -> None:
    body = {"code": "method_not_allowed", "message": "Use GET."}
    await _json(scope, send, 405, body, [(b"allow", b"GET, HEAD")])
