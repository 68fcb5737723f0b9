"""How the API's lists are cut into pages (DRF paginators, so drf-spectacular declares the
page shapes in the schema exactly as they are sent).

Conversations are numbered pages (`{count, next, previous, results}`). A conversation's
messages are cursor pages (`{next, previous, results}`): a cursor is a position in the
history, not an offset, so an answer posted while a client reads older pages shifts
nothing, and a page deep in a long history costs one index range scan, not a COUNT and an
OFFSET.
"""

from __future__ import annotations

from datetime import datetime

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import Cursor, CursorPagination, PageNumberPagination
from rest_framework.utils.urls import replace_query_param

from chat.conf import chat_settings

OLDEST_FIRST = "created_at"
NEWEST_FIRST = "-created_at"


class ConversationPagination(PageNumberPagination):
    page_size = 50


class MessageOrdering(OrderingFilter):
    """`?ordering=created_at` (oldest first, the default) or `-created_at` (newest first,
    what a chat page reads first); anything else is a 400.

    Ties on `created_at` (the app never makes one, but imported rows may) are broken by
    id in the same direction, so every page boundary is stable.
    """

    ordering_fields = (OLDEST_FIRST,)
    ordering_description = (
        "`created_at`: oldest first (the default); `-created_at`: newest first. "
        "Each page's results come in this order."
    )

    def get_ordering(self, request, queryset, view) -> tuple[str, str]:
        value = request.query_params.get(self.ordering_param, OLDEST_FIRST)
        if value not in (OLDEST_FIRST, NEWEST_FIRST):
            raise ValidationError(
                {self.ordering_param: [f"Must be {OLDEST_FIRST!r} or {NEWEST_FIRST!r}."]},
                code="invalid",
            )
        return (value, "-id" if value == NEWEST_FIRST else "id")

    def get_schema_operation_parameters(self, view) -> list[dict]:
        (parameter,) = super().get_schema_operation_parameters(view)
        parameter["schema"] = {"type": "string", "enum": [OLDEST_FIRST, NEWEST_FIRST]}
        return [parameter]


class MessageCursorPagination(CursorPagination):
    """Cursor pages of a conversation's messages, in the order `MessageOrdering` chose.

    `next` continues in that order and `previous` goes back; the last page has no `next`.
    A position is a `created_at`, which the app never gives two messages of a conversation
    (an answer is stamped a microsecond after its question). Imported rows that share one
    are still walked exactly by `next` (DRF counts an offset past the tie, and the id
    orders it), but DRF's `previous` may skip some of them when the walk turns back.
    """

    ordering = (OLDEST_FIRST, "id")  # used only without MessageOrdering on the view
    page_size_query_param = "page_size"
    page_size_query_description = "Messages per page (default {default}, at most {most})."
    invalid_cursor_message = "Invalid cursor."

    def get_page_size(self, request) -> int:
        # DRF quietly falls back to the default for a bad value; say so instead, so the
        # schema (an integer from 1 to the maximum) is exactly what is accepted.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return chat_settings.MESSAGE_PAGE_SIZE
        field = serializers.IntegerField(min_value=1, max_value=chat_settings.MESSAGE_PAGE_SIZE_MAX)
        try:
            return field.run_validation(raw)
        except ValidationError as exc:
            raise ValidationError({self.page_size_query_param: exc.detail}) from None

    def decode_cursor(self, request) -> Cursor | None:
        invalid = NotFound(self.invalid_cursor_message, code="invalid_cursor")
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        # DRF decodes any position and hands it to the database: a position that is not a
        # time would fail there (a 500), so it is refused here like any other bad cursor.
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(cursor.position)
            except ValueError:
                position = None
            if position is None or position.tzinfo is None:
                raise invalid
        return cursor

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                most = chat_settings.MESSAGE_PAGE_SIZE_MAX
                parameter["description"] = self.page_size_query_description.format(
                    default=chat_settings.MESSAGE_PAGE_SIZE, most=most
                )
                parameter["schema"].update(minimum=1, maximum=most)
        return parameters

    def older_than_url(self, messages_url: str, created_at: datetime) -> str:
        """The newest-first page of the messages older than `created_at`: where a reader
        who has the history from `created_at` on continues (the conversation page)."""
        # A position as DRF writes them (`str` of the field) in a forward cursor of the
        # newest-first order, which DRF reads as "created_at < position".
        self.base_url = replace_query_param(
            messages_url, MessageOrdering.ordering_param, NEWEST_FIRST
        )
        return self.encode_cursor(Cursor(offset=0, reverse=False, position=str(created_at)))
