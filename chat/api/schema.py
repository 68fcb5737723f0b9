"""The OpenAPI schema says everything the API answers, errors included.

Every error has the one body of `chat/api/errors.py`, the `Error` component. Each operation
documents the statuses it can answer with: those that follow from the view are added here
(credentials, CSRF, ids in the path, pages, a request body, throttling, admission), and
views name the errors their services raise with `error_responses(...)` beside their success
responses.

Why not drf-standardized-errors (maintained, made for drf-spectacular): it documents errors
by replacing the exception handler, and its schema describes its own body
(`{"type", "errors": [{"code", "detail", "attr"}]}`). Clients, the chat page and
docs/streaming.md rely on ours (`{"code", "message", ...}`), and the stream's refusals are
not DRF responses at all; the class below adds the same statuses to each operation, from
the same facts about the view, in one small place.

Component names read as the things they are (`Conversation`, `Message`, not
`ConversationOutput`), the enums are named in settings (`ENUM_NAME_OVERRIDES`), and
`postprocess` drops a `Patched…` copy identical to its component.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import uritemplate
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication

from chat.conf import chat_settings
from chat.errors import ChatError
from chat.text import is_blank


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="What went wrong, for programs: `invalid`, `not_found`, `run_active`, …"
    )
    message = serializers.CharField(help_text="What went wrong, for people.")
    errors = serializers.DictField(
        required=False, help_text="400 `invalid` only: the messages for each field."
    )
    error_codes = serializers.DictField(
        required=False, help_text="400 `invalid` only: the codes for each field."
    )
    retry_after = serializers.IntegerField(
        required=False,
        help_text="429 `throttled` and `token_budget_exhausted` only: seconds to wait "
        "(as `Retry-After`).",
    )
    resets_at = serializers.DateTimeField(
        required=False,
        help_text="429 `token_budget_exhausted` only: when today's allowance starts again "
        "(the next UTC midnight).",
    )


def error_responses(*errors: type[ChatError]) -> dict[int, OpenApiResponse]:
    """The responses for the errors a view's services raise, by status:
    `extend_schema(responses={201: Out, **error_responses(RunActive, ContentTooLong)})`."""
    reasons: dict[int, list[str]] = defaultdict(list)
    for error in errors:
        reasons[error.status_code].append(_reason(error.default_code, error.default_detail))
    return {
        status: OpenApiResponse(ErrorSerializer, description="\n".join(lines))
        for status, lines in reasons.items()
    }


def _reason(code: str, detail: str) -> str:
    return f"- `{code}`: {detail}"


_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer"},
        "description": "Seconds to wait before trying again.",
    }
}
_HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "429": _RETRY_AFTER,
    "503": _RETRY_AFTER,
}


# What a view answers when its database connection fails under it (chatsite/middleware.py):
# any operation, as every one reads the database (the user, at least).
_DATABASE_UNAVAILABLE = _reason(
    "database_unavailable",
    "The database connection was lost during the request; try again after `Retry-After`.",
)


class AutoSchema(openapi.AutoSchema):
    def get_serializer_name(self, serializer, direction):
        # `ConversationOutputSerializer` is a `Conversation` to a client; inputs keep their
        # suffix (`ConversationInput`), as a generated client needs both types.
        name = super().get_serializer_name(serializer, direction)
        return name.removesuffix("OutputSerializer") or name

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, reasons in self._error_reasons().items():
            key = str(status)
            if key not in responses:
                responses[key] = self._get_response_for_code(
                    ErrorSerializer, key, direction=direction
                )
            described = responses[key].get("description")
            responses[key]["description"] = "\n".join(filter(None, [described, *reasons]))
        for key, headers in _HEADERS.items():
            if key in responses:
                responses[key].setdefault("headers", {}).update(headers)
        return dict(sorted(responses.items()))

    def _error_reasons(self) -> dict[int, list[str]]:
        """The errors that follow from how the view is set up, not from what it does."""
        reasons: dict[int, list[str]] = defaultdict(list)
        view = self.view
        has_body = (
            self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        )
        if has_body:
            reasons[400].append(_reason("invalid", "The body is not valid; see `errors`."))
            reasons[400].append(_reason("parse_error", "The body is not valid JSON."))
        reasons[401].append(
            "- `not_authenticated`, `authentication_failed`, `token_not_valid`, "
            "`no_active_account`: the credentials are missing or not valid."
        )
        if self.method not in ("GET", "HEAD", "OPTIONS") and any(
            isinstance(authenticator, SessionAuthentication)
            for authenticator in view.get_authenticators()
        ):
            reasons[403].append(
                _reason("permission_denied", "CSRF check failed (session authentication only).")
            )
        paginator = self._get_paginator() if self._is_list_view() else None
        if uritemplate.variables(self.path):
            reasons[404].append(_reason("not_found", "No such object, or it is not yours."))
        elif paginator:
            reasons[404].append(_reason("not_found", "No such page."))
        if getattr(paginator, "cursor_query_param", None):
            reasons[404].append(_reason("invalid_cursor", "The cursor is not one this API made."))
        if self.method == "GET" and (
            getattr(paginator, "page_size_query_param", None)
            or getattr(view, "filter_backends", ())
            or self.get_override_parameters()
        ):
            # The message list's cursor pages refuse a `page_size` out of range and an
            # unknown `ordering` (chat/api/pagination.py) rather than ignoring them; views
            # that declare query parameters (`extend_schema(parameters=...)`) validate them.
            reasons[400].append(_reason("invalid", "A query parameter is not valid; see `errors`."))
        if has_body:
            reasons[413].append("- The body is larger than the server accepts.")
            reasons[415].append(_reason("unsupported_media_type", "Send `application/json`."))
        if view.get_throttles():
            reasons[429].append(
                _reason("throttled", "Too many requests; wait `retry_after` seconds.")
            )
        if self.method == "POST" and getattr(view, "starts_a_run", False):
            # Admission: chatsite/handlers.py refuses these POSTs at capacity, as does
            # `_admit` in chat/services.py (which also refuses while shutting down).
            reasons[503].append(
                "- `overloaded`, `unavailable`: this server cannot start another answer "
                "now (at its run limit, or shutting down); try again after `Retry-After`."
            )
        reasons[503].append(_DATABASE_UNAVAILABLE)
        return reasons

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and not field.read_only
            and schema.get("type") == "string"
            and not schema.keys() & {"format", "pattern", "enum"}
        ):
            # With blank allowed, drf-spectacular adds "or empty" to a pattern (`oneOf`), so
            # the pattern itself must not match "" (or "" would match both, which `oneOf` refuses).
            schema["pattern"] = _NOT_EMPTY_NO_NUL if field.allow_blank else _not_blank()
        return schema


# What DRF's CharField refuses, as a pattern: NUL anywhere (its ProhibitNullCharactersValidator;
# PostgreSQL cannot store NUL either) and, unless blank is allowed, a value with nothing but
# whitespace (blank once trimmed, or our `validate_content`).
_NOT_EMPTY_NO_NUL = "^[^\\u0000]+$"


@functools.cache
def _not_blank() -> str:
    # Python's whitespace (what `str.strip` removes), spelled out: the regex engines that read
    # the schema (ECMA, Rust, Python) each mean something slightly different by `\s`.
    return _one_character_not(lambda c: c == "\0" or c.isspace())


@functools.cache
def _not_invisible() -> str:
    # A message's content must hold something a reader would see (chat/text.py: is_blank
    # also refuses zero-width and other invisible characters).
    return _one_character_not(is_blank)


def _one_character_not(excluded) -> str:
    """A pattern for text without NUL holding at least one character `excluded` refuses,
    the excluded characters as ranges of the Basic Multilingual Plane: a pattern without
    ECMA's `u` flag cannot name characters beyond it (all whitespace is within it; of the
    invisible characters, tag characters and two fillers are not, which the API still
    refuses)."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or not excluded(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    chars = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return f"^[^\\u0000]*[^{chars}][^\\u0000]*$"


class MessageContentFieldExtension(OpenApiSerializerFieldExtension):
    """A message's length limit is a setting, checked by the service (413), not the field."""

    target_class = "chat.api.views.MessageContentField"

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {
            **schema,
            "maxLength": chat_settings.MAX_MESSAGE_CHARS,
            "pattern": _not_invisible(),
        }


def postprocess(result: dict, generator, request, public) -> dict:
    """drf-spectacular's last step (`POSTPROCESSING_HOOKS`): a `PatchedX` the same as `X`
    (every field of `X` already optional) is `X`, so clients get one type, not two."""
    schemas = result.get("components", {}).get("schemas", {})
    same = {
        f"#/components/schemas/{name}": f"#/components/schemas/{name.removeprefix('Patched')}"
        for name, schema in schemas.items()
        if name.startswith("Patched") and schemas.get(name.removeprefix("Patched")) == schema
    }
    for ref in same:
        del schemas[ref.rsplit("/", 1)[1]]
    return _replace_refs(result, same) if same else result


def _replace_refs(node, refs: dict[str, str]):
    if isinstance(node, dict):
        return {
            key: refs.get(value, value) if key == "$ref" else _replace_refs(value, refs)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_replace_refs(item, refs) for item in node]
    return node
