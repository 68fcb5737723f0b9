"""The event stream in the OpenAPI schema: `GET /stream/conversations/{conversation_id}/`.

The stream is a plain async Django view (chat/streaming.py), which drf-spectacular cannot
see. `StreamSchemaView` stands in for it: a DRF view that is never routed, whose
`extend_schema` says what the stream takes and answers; `add_stream_endpoint` (a
preprocessing hook, in settings) puts it among the endpoints the schema is made from,
at the stream's real path.

OpenAPI 3.0 has no way to describe a sequence of events, so the `text/event-stream`
response's schema is one event (`StreamEvent`: the event's name, its `id` when it has
one, and its `data`, which is one line of JSON on the wire), one of the components
`MessageStartEvent`, `DeltaEvent`, ... chosen by `event`. They follow the payloads of
chat/events.py and the events of chat/relay.py, as docs/streaming.md lists them; a test
holds them to what the code sends.
"""

from __future__ import annotations

import re

from django.urls import get_resolver
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from chat.api.schema import AutoSchema, ErrorSerializer, error_responses
from chat.errors import (
    DatabaseUnavailable,
    InvalidResumePosition,
    NotFound,
    StreamAuthFailed,
    TooManyStreams,
)
from chat.models import Message

STREAM_URL_NAME = "conversation-stream"

_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# A resume position (chat/events.py): `<message id>:<characters the client has>`, or `:end`.
RESUME_POSITION = f"^{_UUID}:(0|[1-9][0-9]*|end)$"


def _string(description: str = "", **more) -> dict:
    return {"type": "string", **({"description": description} if description else {}), **more}


def _object(properties: dict, description: str = "") -> dict:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {**schema, "description": description} if description else schema


_NULLABLE_INT = {"type": "integer", "nullable": True}
_MESSAGE_ID = _string("The message's id.", format="uuid")
_STATUS = _string(enum=list(Message.Status.values))


def _event(name: str, data: dict, *, id_pattern: str | None, description: str) -> dict:
    properties = {"event": _string(f"`{name}`", enum=[name])}
    if id_pattern is not None:
        properties["id"] = _string(
            "The resume position after this event (send it back as `Last-Event-ID`).",
            pattern=id_pattern,
        )
    properties["data"] = data
    return _object(properties, description)


EVENTS = {
    "MessageStartEvent": _event(
        "message_start",
        _object(
            {
                "message": _object(
                    {
                        "id": _MESSAGE_ID,
                        "role": _string(enum=list(Message.Role.values)),
                        "status": _STATUS,
                        "created_at": _string(format="date-time"),
                        "context_omitted_turns": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Earlier exchanges the model was not sent "
                            "(the conversation is longer than its context window).",
                        },
                    }
                )
            }
        ),
        id_pattern=f"^{_UUID}:0$",
        description="An answer (or, on a fresh connection, the one streaming now) begins.",
    ),
    "DeltaEvent": _event(
        "delta",
        _object({"message_id": _MESSAGE_ID, "text": _string("Text to append.")}),
        id_pattern=f"^{_UUID}:[1-9][0-9]*$",
        description="More of a message's text: exactly what the client lacks.",
    ),
    "ErrorEvent": _event(
        "error",
        _object(
            {
                "message_id": {**_MESSAGE_ID, "nullable": True},
                "code": _string(
                    "`upstream_overloaded`, `upstream_rate_limited`, `upstream_unreachable`, "
                    "`upstream_timeout`, `upstream_disconnected`, `upstream_stalled`, "
                    "`upstream_error`, `upstream_auth`, `internal_error`, `server_shutdown`, "
                    "`run_lost`, `conversation_deleted`; with `message_id` null, "
                    "`auth_revoked`."
                ),
                "message": _string("For people."),
                "retryable": {"type": "boolean"},
            }
        ),
        id_pattern=None,
        description="Just before the `message_end` of an answer that did not complete; or, "
        "with `message_id` null, the stream's last event (`auth_revoked`: sign in again).",
    ),
    "MessageEndEvent": _event(
        "message_end",
        _object(
            {
                "message_id": _MESSAGE_ID,
                "status": _STATUS,
                "stop_reason": _string("The model's, when it said.", nullable=True),
                "usage": _object({"input_tokens": _NULLABLE_INT, "output_tokens": _NULLABLE_INT}),
            }
        ),
        id_pattern=f"^{_UUID}:end$",
        description="A message ended: `complete`, `cancelled`, `failed` or `interrupted`.",
    ),
    "ResetEvent": _event(
        "reset",
        _object(
            {
                "reason": _string(enum=["unknown_position", "position_beyond_text"]),
                "message": _string("For people."),
            }
        ),
        id_pattern=None,
        description="Drop what you hold for the message(s) that follow: they are sent again "
        "in full.",
    ),
    "ConversationDeletedEvent": _event(
        "conversation_deleted",
        _object({"conversation_id": _string(format="uuid")}),
        id_pattern=None,
        description="The last event: the conversation was deleted (a reconnect gets 404).",
    ),
}


def _stream_event() -> dict:
    refs = {name: f"#/components/schemas/{name}" for name in EVENTS}
    return {
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {
            "propertyName": "event",
            "mapping": {
                schema["properties"]["event"]["enum"][0]: refs[name]
                for name, schema in EVENTS.items()
            },
        },
    }


_EVENT_LIST = "\n".join(
    f"- `{schema['properties']['event']['enum'][0]}` ({name}): {schema['description']}"
    for name, schema in EVENTS.items()
)

DESCRIPTION = f"""The conversation's live events as Server-Sent Events (an `EventSource`).
Authenticate with a stream token (`?token=`, from `POST /api/v1/conversations/{{id}}/stream-token/`)
or the session cookie. Every refusal is a plain JSON error before the stream starts.

A `200` stream starts with `retry: <ms>`, sends a `: ping` comment at least every heartbeat,
and then, per event, `event: <name>`, an `id:` (a resume position) for the events that move
a message forward, and one line of JSON `data:`:

{_EVENT_LIST}

See docs/streaming.md for the whole contract (resuming, when access ends, slow clients)."""


class StreamAutoSchema(AutoSchema):
    """The stream's refusals are its own (chat/streaming.py), not DRF's: each is listed on
    the view, none added from how the view is set up."""

    def _error_reasons(self) -> dict[int, list[str]]:
        return {}

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        responses["401"].pop("headers", None)  # the stream's 401 names no scheme
        return responses


def _error(status: int, *lines: str) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(ErrorSerializer, description="\n".join(lines))}


class StreamSchemaView(APIView):
    """Never routed: describes `chat.streaming.conversation_stream` to the schema."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [AllowAny]  # or a stream token instead of the session
    schema = StreamAutoSchema()

    @extend_schema(
        operation_id="conversation_stream",
        summary="The conversation's live events (Server-Sent Events)",
        description=DESCRIPTION,
        parameters=[
            OpenApiParameter(
                "token",
                str,
                OpenApiParameter.QUERY,
                description="A stream token for this conversation (without one, the session "
                "cookie is used).",
            ),
            OpenApiParameter(
                "last_event_id",
                str,
                OpenApiParameter.QUERY,
                pattern=RESUME_POSITION,
                description="Resume after this position (the last `id:` received): for a "
                "fresh `EventSource`, after a reload or with a new token.",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                pattern=RESUME_POSITION,
                description="The same, as `EventSource` sends it when it reconnects; it wins "
                "over `last_event_id`.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                {"$ref": "#/components/schemas/StreamEvent"},
                description="An event stream; each event is one `StreamEvent`.",
            ),
            **error_responses(InvalidResumePosition, StreamAuthFailed, TooManyStreams),
            **_error(
                404,
                "- `not_found`: no such conversation, not yours, or an id that is not a UUID.",
            ),
            **_error(
                503,
                "- `unavailable`: the server is shutting down, or live updates cannot be "
                "reached; reconnect after `Retry-After`.",
                f"- `database_unavailable`: {DatabaseUnavailable.default_detail}",
            ),
        },
    )
    def get(self, request, conversation_id):
        raise NotFound()


def add_stream_endpoint(endpoints: list) -> list:
    """drf-spectacular's `PREPROCESSING_HOOKS`: the stream among the endpoints, at the
    route the URL conf gives it (`stream/conversations/<uuid:conversation_id>/`)."""
    (route,) = (
        str(pattern.pattern)
        for pattern in get_resolver().url_patterns
        if getattr(pattern, "name", None) == STREAM_URL_NAME
    )
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return [*endpoints, (path, route, "GET", StreamSchemaView.as_view())]


def add_event_components(result: dict, generator, request, public) -> dict:
    """drf-spectacular's `POSTPROCESSING_HOOKS`, after its enum hook (which would make a
    component of each event's one-value `event` enum): the events' components."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({**EVENTS, "StreamEvent": _stream_event()})
    result["components"]["schemas"] = dict(sorted(schemas.items()))
    return result
