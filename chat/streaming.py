"""The SSE endpoint: `GET /stream/conversations/{id}/`.

A plain `async def` Django view (DRF views are sync). Every refusal is decided
before the response starts, so clients get a real 401/404 rather than a 200
with an error inside. The stream itself subscribes to the conversation's
channel-layer group *first*, then catches up from stored state, so nothing
that happens in between is missed; the relay drops what arrives twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from . import events, sse
from .errors import ChatError, StreamAuthFailed
from .events import ResumePosition
from .relay import ConversationRelay
from .replay import get_replay_buffer
from .selectors import aconversation_get_for_user
from .tokens import StreamToken, TokenError

logger = logging.getLogger(__name__)


async def conversation_stream(request: HttpRequest, conversation_id) -> StreamingHttpResponse:
    if request.method != "GET":
        return JsonResponse({"code": "method_not_allowed", "message": "Use GET."}, status=405)
    try:
        user = await _stream_user(request, str(conversation_id))
        conversation = await aconversation_get_for_user(user=user, conversation_id=conversation_id)
        resume = _resume_position(request)
    except ChatError as exc:
        return JsonResponse({"code": exc.code, "message": exc.message}, status=exc.status_code)

    response = StreamingHttpResponse(
        _event_stream(str(conversation.pk), resume), content_type="text/event-stream"
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


async def _event_stream(
    conversation_id: str, resume: ResumePosition | None
) -> AsyncIterator[bytes]:
    layer = get_channel_layer()
    group = events.conversation_group(conversation_id)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    relay = ConversationRelay(conversation_id=conversation_id, buffer=get_replay_buffer())
    heartbeat = settings.CHAT_SSE_HEARTBEAT_SECONDS
    try:
        yield sse.retry(settings.CHAT_SSE_RETRY_MS)
        for frame in await relay.catch_up(resume):
            yield frame
        while True:
            try:
                event = await asyncio.wait_for(layer.receive(channel), timeout=heartbeat)
            except TimeoutError:
                yield sse.HEARTBEAT
                continue
            frames = await relay.on_event(event)
            if frames:
                yield b"".join(frames)
    finally:
        # Runs on client disconnect too: Django cancels the response task.
        await asyncio.shield(layer.group_discard(group, channel))
