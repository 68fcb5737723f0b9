"""The SSE endpoint: `GET /stream/conversations/{id}/`.

A plain `async def` Django view (DRF views are sync). Every refusal is decided
before the response starts — 401 token, 404 conversation, 400 resume position,
429 too many streams, 503 channel layer down — so clients get a real status
rather than a 200 with an error inside. The view subscribes to the
conversation's channel-layer group *before* anything is read, then the stream
catches up from stored state; the relay drops what arrives twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from . import events, sse
from .errors import ChatError, StreamAuthFailed, TooManyStreams, Unavailable
from .events import ResumePosition
from .limits import get_stream_slots
from .relay import ConversationRelay
from .replay import get_replay_buffer
from .selectors import aconversation_get_for_user
from .supervisor import supervisor
from .tokens import StreamToken, TokenError

logger = logging.getLogger(__name__)


async def conversation_stream(request: HttpRequest, conversation_id) -> StreamingHttpResponse:
    if request.method != "GET":
        return JsonResponse({"code": "method_not_allowed", "message": "Use GET."}, status=405)
    await supervisor.ensure_started()
    try:
        if supervisor.draining:
            raise Unavailable("This server is shutting down; reconnect to another.")
        user = await _stream_user(request, str(conversation_id))
        conversation = await aconversation_get_for_user(user=user, conversation_id=conversation_id)
        resume = _resume_position(request)
        subscription = await _Subscription.open(str(conversation.pk), str(user.pk))
    except ChatError as exc:
        response = JsonResponse({"code": exc.code, "message": exc.message}, status=exc.status_code)
        if retry_after := getattr(exc, "retry_after", None):
            response["Retry-After"] = str(retry_after)
        return response

    response = StreamingHttpResponse(
        _event_stream(subscription, resume), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


async def _stream_user(request: HttpRequest, conversation_id: str):
    """The user a stream token names (if one is given), else the session's user."""
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
    user = await get_user_model().objects.filter(pk=token.user_id, is_active=True).afirst()
    if user is None:
        raise StreamAuthFailed()
    return user


def _resume_position(request: HttpRequest) -> ResumePosition | None:
    # The header is what EventSource sends on its own reconnects; the query
    # parameter is for a fresh EventSource after a page reload or a new token.
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    return ResumePosition.parse(raw) if raw else None


class _Subscription:
    """A stream slot for the user and a channel in the conversation's group."""

    def __init__(self, conversation_id: str, user_id: str, channel: str) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.channel = channel
        self.group = events.conversation_group(conversation_id)

    @classmethod
    async def open(cls, conversation_id: str, user_id: str) -> _Subscription:
        layer = get_channel_layer()
        try:
            async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                channel = await layer.new_channel("chat.stream.")
                slots = get_stream_slots()
                if not await slots.acquire(user_id, channel, settings.CHAT_MAX_STREAMS_PER_USER):
                    raise TooManyStreams()
                subscription = cls(conversation_id, user_id, channel)
                await layer.group_add(subscription.group, channel)
        except ChatError:
            raise
        except Exception as exc:
            logger.warning("stream subscription failed: %r", exc)
            raise Unavailable("Live updates are unavailable; retrying shortly.") from exc
        return subscription

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.CHAT_REDIS_TIMEOUT):
                await get_channel_layer().group_discard(self.group, self.channel)
                await get_stream_slots().release(self.user_id, self.channel)


async def _event_stream(sub: _Subscription, resume: ResumePosition | None) -> AsyncIterator[bytes]:
    layer = get_channel_layer()
    relay = ConversationRelay(conversation_id=sub.conversation_id, buffer=get_replay_buffer())
    heartbeat = settings.CHAT_SSE_HEARTBEAT_SECONDS
    supervisor.stream_opened(sub.channel, asyncio.current_task())
    try:
        yield sse.retry(settings.CHAT_SSE_RETRY_MS)
        for frame in await relay.catch_up(resume):
            yield frame
        while True:
            try:
                event = await asyncio.wait_for(layer.receive(sub.channel), timeout=heartbeat)
            except TimeoutError:
                yield sse.HEARTBEAT
                with contextlib.suppress(Exception):
                    await get_stream_slots().refresh(sub.user_id, sub.channel)
                continue
            frames = await relay.on_event(event)
            if frames:
                yield b"".join(frames)
    finally:
        # Runs on client disconnect too (Django cancels the response task), and
        # on any layer failure: the client reconnects and resumes from its id.
        supervisor.stream_closed(sub.channel)
        await asyncio.shield(sub.close())
