"""The SSE endpoint: `GET /stream/conversations/{id}/`.

A plain `async def` Django view (DRF views are sync). Every refusal is decided
before the response starts — 401 token, 404 conversation, 400 resume position,
429 too many streams, 503 channel layer down — so clients get a real status
rather than a 200 with an error inside. The view subscribes to the
conversation's channel-layer group *before* anything is read, then the stream
catches up from stored state; the relay drops what arrives twice.

A stream ends with `error` `auth_revoked` when its user's access ends while it is
open (deactivation, a password change: chat/access.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from . import events, metrics, sse
from .access import REVOKED, credentials, stream_access
from .conf import chat_settings
from .errors import BackendUnavailable, ChatError, StreamAuthFailed, TooManyStreams, Unavailable
from .events import ResumePosition
from .fanout import CLOSED, fanout
from .limits import get_stream_slots
from .relay import ConversationRelay
from .replay import get_replay_buffer
from .runs import manager
from .selectors import aconversation_get_for_user
from .tokens import AuthenticationFailed, StreamToken, TokenError, user_for_token

logger = logging.getLogger(__name__)


async def conversation_stream(request: HttpRequest, conversation_id) -> StreamingHttpResponse:
    if request.method != "GET":
        return JsonResponse(
            {"code": "method_not_allowed", "message": "Use GET."},
            status=405,
            headers={"Allow": "GET"},
        )
    try:
        if manager.draining:
            raise Unavailable("This server is shutting down; reconnect to another.")
        user = await _stream_user(request, str(conversation_id))
        conversation = await aconversation_get_for_user(user=user, conversation_id=conversation_id)
        resume = _resume_position(request)
        subscription = await _Subscription.open(str(conversation.pk), user)
    except ChatError as exc:
        return JsonResponse(exc.body, status=exc.status_code, headers=exc.headers)

    response = StreamingHttpResponse(
        _event_stream(subscription, resume), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


async def _stream_user(request: HttpRequest, conversation_id: str):
    """The user a stream token names (if one is given), else the session's user.

    Either way an inactive user, or one whose password changed since the token (or the
    session) was made, is refused: simplejwt's checks, and Django's session hash."""
    raw = request.GET.get("token")
    if raw is None:
        user = await request.auser()
        if not user.is_authenticated:
            raise StreamAuthFailed("Log in, or pass a stream token as ?token=.")
        return user
    try:
        token = StreamToken(raw)
    except TokenError:
        raise StreamAuthFailed() from None
    if token.conversation_id != conversation_id:
        raise StreamAuthFailed("This stream token is for another conversation.")
    try:
        # The ORM is sync: one hop to the request's thread, as `afirst()` would make.
        return await sync_to_async(user_for_token)(token)
    except AuthenticationFailed:
        raise StreamAuthFailed("This stream token's user may no longer sign in.") from None


def _resume_position(request: HttpRequest) -> ResumePosition | None:
    # The header is what EventSource sends on its own reconnects; the query
    # parameter is for a fresh EventSource after a page reload or a new token.
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    return ResumePosition.parse(raw) if raw else None


class _Subscription:
    """A stream slot for the user and a queue of the conversation's live events, watched
    for the end of the user's access."""

    def __init__(self, conversation_id: str, user_id: str) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.id = uuid.uuid4().hex
        self.group = events.conversation_group(conversation_id)
        self.queue: asyncio.Queue | None = None

    @classmethod
    async def open(cls, conversation_id: str, user) -> _Subscription:
        user_id = str(user.pk)
        sub = cls(conversation_id, user_id)
        slots = get_stream_slots()
        try:
            if not await slots.acquire(user_id, sub.id, chat_settings.MAX_STREAMS_PER_USER):
                raise TooManyStreams()
            sub.queue = await fanout.subscribe(sub.group)
        except BackendUnavailable as exc:
            logger.warning("stream subscription failed: %s", exc)
            with contextlib.suppress(BackendUnavailable):
                await slots.release(user_id, sub.id)
            raise Unavailable("Live updates are unavailable; retrying shortly.") from exc
        stream_access.watch(user_id, credentials(user), sub.queue)
        return sub

    async def close(self) -> None:
        stream_access.forget(self.user_id, self.queue)
        fanout.unsubscribe(self.group, self.queue)
        with contextlib.suppress(BackendUnavailable):
            await get_stream_slots().release(self.user_id, self.id)


async def _event_stream(sub: _Subscription, resume: ResumePosition | None) -> AsyncIterator[bytes]:
    relay = ConversationRelay(conversation_id=sub.conversation_id, buffer=get_replay_buffer())
    heartbeat = chat_settings.SSE_HEARTBEAT_SECONDS
    quiet = chat_settings.SSE_QUIET_SECONDS
    loop = asyncio.get_running_loop()
    try:
        yield sse.retry(chat_settings.SSE_RETRY_MS)
        for frame in await relay.catch_up(resume):
            yield frame
        last_write = loop.time()
        queue = sub.queue
        while True:
            # While a message is in flight, wait at most `quiet` seconds for its
            # next event, then ask stored state (see `ConversationRelay.check_in_flight`).
            wait = min(quiet, heartbeat) if relay.in_flight else heartbeat
            try:
                # `asyncio.timeout`, not `wait_for`: no extra task per event.
                async with asyncio.timeout(wait):
                    batch = [await queue.get()]
            except TimeoutError:
                frames = []
                if relay.in_flight:
                    try:
                        frames = await relay.check_in_flight()
                    except BackendUnavailable as exc:
                        # Stored state is out of reach (Redis away): end the stream;
                        # EventSource reconnects and resumes when it can be served.
                        logger.warning("stream ends, its message went quiet: %r", exc)
                        return
                if frames:
                    yield b"".join(frames)
                    if relay.closed:
                        return
                elif loop.time() - last_write >= heartbeat - 0.01:
                    yield sse.HEARTBEAT
                    with contextlib.suppress(BackendUnavailable):
                        await get_stream_slots().refresh(sub.user_id, sub.id)
                else:
                    continue
                last_write = loop.time()
                continue
            # Whatever else queued up while this stream waited for the event
            # loop goes out in the same write: under load, fewer, larger writes.
            while not queue.empty():
                batch.append(queue.get_nowait())
            if REVOKED in batch:
                # The user's access ended: nothing more is sent, whatever was queued.
                yield sse.event("error", events.auth_revoked_data())
                return
            closed = CLOSED in batch
            if closed:
                batch = batch[: batch.index(CLOSED)]
            # Each queue item is a batch of events (one flush of one process).
            frames = await relay.on_events([event for events in batch for event in events])
            if frames:
                metrics.relayed(batch)
                yield b"".join(frames)
                last_write = loop.time()
            if relay.closed:
                return  # the conversation was deleted
            if closed:
                # The process can no longer feed this stream (layer failure or
                # shutdown). End cleanly: the browser reconnects with its last
                # id and resumes, here or on another process.
                return
    finally:
        # Runs on client disconnect too: Django cancels the response task.
        await asyncio.shield(sub.close())
