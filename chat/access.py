"""Open streams end when their user's access does: deactivation, a password change, deletion.

A stream is authorized once, when it opens (by a stream token or the session), and may
then stay open for hours. So each process keeps its open streams by user, with the
*credentials* they were opened under (`credentials`: None for a user who may not sign
in, else simplejwt's fingerprint of the password hash, the one its tokens carry). A
stream whose user's credentials are no longer those is sent `error` `auth_revoked` and
ends; its reconnect is refused (401), as the user's tokens and session are.

Two paths lead here, so that idle streams cost no query each:

* a user saved or deleted through the ORM (the admin's "active" checkbox,
  `set_password()` + `save()`, `delete()`) is announced to every process after commit
  (`user_access_changed`, a `user.access` broadcast through the fan-out); a process
  that holds that user's streams reads the user once and ends what changed;
* every `CHAT_SSE_HEARTBEAT_SECONDS` each process reads the users of all its open
  streams in one query (`check`) and compares: this catches what the ORM never saw (a
  queryset `update()`, raw SQL, another service) within one heartbeat.

A user's answers being generated are not stopped: the run owns its answer, which is
saved as usual (see docs/streaming.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from rest_framework_simplejwt.utils import get_md5_hash_password

from .conf import chat_settings
from .fanout import Fanout, fanout

logger = logging.getLogger(__name__)

_CHANGED = "user.access"
# Saves that cannot change access: a login's `update_last_login`.
_HARMLESS_FIELDS = frozenset({"last_login"})


class _Revoked:
    def __repr__(self) -> str:
        return "REVOKED"


# Put in a stream's queue when its user's access ended: the stream says so and ends.
REVOKED = _Revoked()


def credentials(user) -> str | None:
    """What a stream of `user` was authorized under; any change ends it."""
    return _fingerprint(getattr(user, "is_active", True), user.password)


def _fingerprint(is_active: bool, password: str) -> str | None:
    # simplejwt's own revoke claim (`CHECK_REVOKE_TOKEN`): exactly the changes that
    # refuse the user's tokens end their streams. Never the hash itself: no password
    # material in memory longer than needed, nor on the wire.
    return get_md5_hash_password(password) if is_active else None


class StreamAccess:
    """This process's open streams by user, ended when the user's access ends."""

    def __init__(self, *, transport: Fanout = fanout) -> None:
        self._streams: dict[str, dict[asyncio.Queue, str | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._held: set[asyncio.Task] = set()
        transport.on_control(_CHANGED, self._on_changed)

    def watch(self, user_id: str, authorized: str | None, queue: asyncio.Queue) -> None:
        """Track a stream of `user_id` opened under credentials `authorized`."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A server has one loop for its life; only tests run several in turn.
            self._loop, self._task, self._streams = loop, None, {}
        if self._task is None:
            self._task = loop.create_task(self._check_every_heartbeat(), name="chat-access")
        self._streams.setdefault(user_id, {})[queue] = authorized

    def forget(self, user_id: str, queue: asyncio.Queue) -> None:
        streams = self._streams.get(user_id)
        if streams is not None:
            streams.pop(queue, None)
            if not streams:
                del self._streams[user_id]

    @property
    def user_count(self) -> int:
        return len(self._streams)

    async def check(self, user_ids: Iterable[str] | None = None) -> int:
        """Read the users of this process's open streams (or of those of `user_ids` that
        have any here) and end the streams whose credentials changed; how many ended."""
        held = self._streams
        ids = list(held) if user_ids is None else [u for u in user_ids if u in held]
        if not ids:
            return 0
        current = await _current_credentials(ids)
        ended = 0
        for user_id in ids:
            # A user missing from `current` was deleted: None never matches a signed-in stream.
            now = current.get(user_id)
            for queue, authorized in list(self._streams.get(user_id, {}).items()):
                if now is None or authorized != now:
                    queue.put_nowait(REVOKED)
                    self.forget(user_id, queue)
                    ended += 1
        if ended:
            logger.info("ended %d streams whose user's access changed", ended)
        return ended

    def _on_changed(self, message: dict) -> None:
        user_id = message.get("user_id")
        if user_id in self._streams:
            task = asyncio.ensure_future(self.check([user_id]))
            self._held.add(task)  # a task nobody holds may be dropped by the loop
            task.add_done_callback(self._held.discard)

    async def _check_every_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(chat_settings.SSE_HEARTBEAT_SECONDS)
            try:
                await self.check()
            except Exception:
                logger.exception("stream access check failed")


def _read_credentials(user_ids: list[str]) -> dict[str, str | None]:
    """{user id: credentials} of the users that exist. One query (SQLite: one per 999 ids,
    its limit on query parameters), three columns, no model instances: at 10,000 open
    streams this runs every heartbeat."""
    users = get_user_model().objects.order_by()
    step = connection.features.max_query_params or len(user_ids)
    found: dict[str, str | None] = {}
    for start in range(0, len(user_ids), step):
        rows = users.filter(pk__in=user_ids[start : start + step]).values_list(
            "pk", "is_active", "password"
        )
        found.update((str(pk), _fingerprint(active, password)) for pk, active, password in rows)
    return found


# On the loop's shared pool, as streams' own reads are (chat/relay.py): not on the runs'
# database thread, whose checkpoints should not wait behind it.
_current_credentials = database_sync_to_async(_read_credentials, thread_sensitive=False)


def user_access_changed(*, user_id) -> None:
    """After the current transaction commits, have every process re-check `user_id`'s
    streams (a service for changes made outside the ORM's save and delete, too)."""
    message = {"type": _CHANGED, "user_id": str(user_id)}
    transaction.on_commit(lambda: fanout.broadcast_soon(message))


def _user_saved(sender, instance, created: bool, update_fields=None, raw: bool = False, **kwargs):
    if created or raw:
        return  # a new user has no streams; fixtures load no live users
    if update_fields is not None and set(update_fields) <= _HARMLESS_FIELDS:
        return
    user_access_changed(user_id=instance.pk)


def _user_deleted(sender, instance, **kwargs):
    user_access_changed(user_id=instance.pk)


def connect_signals() -> None:
    """Announce every save and deletion of a user (called once, from `ChatConfig.ready`)."""
    user_model = get_user_model()
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="chat.access.saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="chat.access.deleted")


stream_access = StreamAccess()
