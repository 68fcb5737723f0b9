"""The JSON API: thin views that parse, check ownership, call one service, render."""

from __future__ import annotations

import functools
import uuid

from django.http import QueryDict, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.fields import empty
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import catalog, export, selectors, services
from chat.api.pagination import ConversationPagination, MessageCursorPagination, MessageOrdering
from chat.api.schema import ErrorSerializer, error_responses
from chat.api.throttling import SendRateThrottle
from chat.conf import chat_settings
from chat.errors import (
    ContentTooLong,
    ContextTooLong,
    InvalidParent,
    MessageFinished,
    NotAnAnswer,
    NotAUserMessage,
    RunActive,
    TokenBudgetExhausted,
)
from chat.models import Conversation, Message
from chat.search import SEARCH_MAX_CHARS
from chat.text import is_blank

_USAGE_HELP = (
    " An answer that ended before the model reported its usage (stopped, broken, or ended "
    "by the sweeper after its server died) counts estimates."
)


class ConversationOutputSerializer(serializers.ModelSerializer):
    # Links a client (and the browsable API, which makes them clickable) can follow.
    url = serializers.HyperlinkedIdentityField(
        view_name="conversation-detail", lookup_url_kwarg="conversation_id"
    )
    messages_url = serializers.HyperlinkedIdentityField(
        view_name="message-list", lookup_url_kwarg="conversation_id"
    )
    # Totals over the conversation's answers, every attempt included (each was paid for):
    # one aggregate with the conversation's row (`Conversation.objects.with_usage()`).
    input_tokens = serializers.IntegerField(
        read_only=True, help_text="Input tokens of all its answers." + _USAGE_HELP
    )
    output_tokens = serializers.IntegerField(
        read_only=True, help_text="Output tokens of all its answers." + _USAGE_HELP
    )

    snippet = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="In the results of `GET /conversations/?search=`: the text around the match "
        "in the conversation's best-matching message (plain text), or null when only the "
        "title matched. Null everywhere else.",
    )

    class Meta:
        model = Conversation
        fields = (
            "id",
            "url",
            "messages_url",
            "title",
            "system_prompt",
            "model",
            "created_at",
            "updated_at",
            "input_tokens",
            "output_tokens",
            "pinned",
            "archived",
            "snippet",
        )
        extra_kwargs = {
            "model": {
                "help_text": "The model its next answer uses: one of `GET /api/v1/models/` (a "
                "model stored before it stopped being offered is answered by the default one)."
            }
        }

    def to_representation(self, conversation: Conversation) -> dict:
        data = super().to_representation(conversation)
        if data["snippet"] is not None:
            data["snippet"] = " ".join(data["snippet"].split())  # one line, as the sidebar shows it
        return data


class MessageOutputSerializer(serializers.Serializer):
    # Declared field by field, not a ModelSerializer: a ModelSerializer rebuilds
    # its fields from the model on every request, and every send returns two messages.
    id = serializers.UUIDField(read_only=True)
    role = serializers.ChoiceField(choices=Message.Role.choices, read_only=True)
    content = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=Message.Status.choices, read_only=True)
    stop_reason = serializers.CharField(read_only=True)
    model = serializers.CharField(
        read_only=True,
        help_text="The model that produced this answer (its id when it ran); empty for user "
        "messages and for answers from before models were recorded.",
    )
    input_tokens = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Null for user messages and unfinished answers." + _USAGE_HELP,
    )
    output_tokens = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Null for user messages and unfinished answers." + _USAGE_HELP,
    )
    usage_estimated = serializers.BooleanField(
        read_only=True,
        help_text="Whether `input_tokens`/`output_tokens` are estimates, not the model's report.",
    )
    error_code = serializers.CharField(read_only=True)
    error_message = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    completed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    reply_to = serializers.UUIDField(
        source="reply_to_id",
        read_only=True,
        allow_null=True,
        help_text="Answers: the user message answered (several answers to one user message "
        "are regenerations). Null for user messages.",
    )
    parent = serializers.UUIDField(
        source="parent_id",
        read_only=True,
        allow_null=True,
        help_text="User messages: the answer this message follows, null for a "
        "conversation's first message (several user messages with one parent are edits, "
        "each starting a branch). Null for answers.",
    )
    context_omitted_turns = serializers.IntegerField(read_only=True)
    conversation_url = serializers.HyperlinkedRelatedField(
        view_name="conversation-detail",
        lookup_url_kwarg="conversation_id",
        source="conversation",
        read_only=True,
    )

    def to_representation(self, message: Message) -> dict:
        # What DRF's generic `to_representation` makes of the fields above (a test
        # holds the two equal), without deep-copying fifteen fields per message:
        # every send returns two messages, and that copy was most of its rendering.
        # The link is one `reverse()` per serializer, not per message: a page of a
        # hundred messages shares the child serializer.
        conversation_url = self._conversation_url
        return {
            "id": str(message.id),
            "role": message.role,
            "content": message.content,
            "status": message.status,
            "stop_reason": message.stop_reason,
            "model": message.model,
            "input_tokens": message.input_tokens,
            "output_tokens": message.output_tokens,
            "usage_estimated": message.usage_estimated,
            "error_code": message.error_code,
            "error_message": message.error_message,
            "created_at": _datetime(message.created_at),
            "completed_at": _datetime(message.completed_at),
            "reply_to": str(message.reply_to_id) if message.reply_to_id else None,
            "parent": str(message.parent_id) if message.parent_id else None,
            "context_omitted_turns": message.context_omitted_turns,
            "conversation_url": conversation_url.replace(
                _PLACEHOLDER, str(message.conversation_id)
            ),
        }

    @functools.cached_property
    def _conversation_url(self) -> str:
        return _url_template(self.context["request"], "conversation-detail", "conversation_id")


class MessageHistorySerializer(MessageOutputSerializer):
    """A message as the history lists it: with the answer's HTML for readers that show it."""

    html = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="A finished answer as sanitized HTML, rendered from `content` on the server "
        "(what the chat page shows); null for user messages and unfinished answers.",
    )

    def to_representation(self, message: Message) -> dict:
        data = super().to_representation(message)
        finished_answer = message.role == Message.Role.ASSISTANT and not message.is_active
        data["html"] = message.html if finished_answer else None
        return data


_DATETIME = serializers.DateTimeField()
_PLACEHOLDER = str(uuid.UUID(int=0))


def _url_template(request, view_name: str, kwarg: str) -> str:
    """The absolute URL of `view_name` with `_PLACEHOLDER` for its one id."""
    return request.build_absolute_uri(reverse(view_name, kwargs={kwarg: _PLACEHOLDER}))


def _datetime(value):
    return None if value is None else _DATETIME.to_representation(value)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers instead of turning them into strings."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MessageContentField(StrictCharField):
    """A message's text. Its length limit is checked by the service (413), not here (400);
    the schema declares it (chat/api/schema.py)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("style", {"base_template": "textarea.html", "rows": 5})
        super().__init__(**kwargs)


class OfferedModelField(serializers.ChoiceField):
    """The id of a model this install offers (`CHAT_MODELS`, `GET /api/v1/models/`).

    The choices are read from the settings each time a serializer is built, never at
    import; the schema declares them as an enum, and anything else is a 400 that lists them.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=[], **kwargs)

    def bind(self, field_name, parent) -> None:
        super().bind(field_name, parent)
        models = catalog.offered_models()
        self.choices = [(model.id, model.label) for model in models]
        ids = [model.id for model in models]
        self.error_messages["invalid_choice"] = (
            f'"{{input}}" is not a model this site offers: choose one of {", ".join(ids)}.'
        )

    def to_internal_value(self, data):
        if not isinstance(data, str):  # DRF's ChoiceField would take 1 for "1"
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """`true` or `false` in JSON, not the `"yes"`, `1` or `"on"` DRF's BooleanField also
    takes (the schema says boolean); an HTML form (the browsable API) still posts text."""

    def to_internal_value(self, data):
        if not isinstance(data, bool) and not isinstance(self.root.initial_data, QueryDict):
            self.fail("invalid", input=data)
        return super().to_internal_value(data)


class QueryBooleanField(serializers.BooleanField):
    """A boolean query parameter: `true` or `false`, nothing else."""

    TRUE_VALUES = {"true"}
    FALSE_VALUES = {"false"}
    NULL_VALUES: set = set()

    def get_value(self, dictionary):
        # As sent: absent is absent (not a form's unticked False) and "" is refused.
        return dictionary.get(self.field_name, empty)


class ConversationInputSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    system_prompt = StrictCharField(
        max_length=20_000,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"base_template": "textarea.html"},
    )
    model = OfferedModelField(
        required=False, help_text="One of `GET /api/v1/models/`; the default when left out."
    )
    pinned = StrictBooleanField(
        required=False, help_text="Pinned conversations are listed first. Pinning unarchives."
    )
    archived = StrictBooleanField(
        required=False,
        help_text="Archived conversations are left out of the list (see `?archived=`) but "
        "still found by search. Archiving unpins (with `pinned: true` too, archiving wins).",
    )


@extend_schema_serializer(component_name="MessageEditInput")
class MessageEditInputSerializer(serializers.Serializer):
    content = MessageContentField(trim_whitespace=False)

    def validate_content(self, value: str) -> str:
        # Blank includes invisible characters only (zero-width spaces, fillers...).
        if is_blank(value):
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value


@extend_schema_serializer(component_name="MessageSendResult")
class MessageSendOutputSerializer(serializers.Serializer):
    user_message = MessageOutputSerializer()
    assistant_message = MessageOutputSerializer()


class ConversationListQuerySerializer(serializers.Serializer):
    search = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=SEARCH_MAX_CHARS,
        help_text="Only conversations whose title or message text matches, best match first "
        '(full-text search on PostgreSQL: words, "a phrase", `or`, `-word`; a contains-'
        "search on SQLite), each with a `snippet`. Archived conversations are searched "
        "too unless `archived` is given. Blank: the usual list.",
    )
    archived = QueryBooleanField(
        required=False,
        help_text="`true`: only archived conversations. `false`: only the others (what the "
        "list shows without `archived`; a search then covers both).",
    )


@extend_schema_view(get=extend_schema(parameters=[ConversationListQuerySerializer]))
class ConversationListCreateApi(generics.ListAPIView):
    """GET: the user's conversations, pinned first then the most recently updated, archived
    ones left out (or alone, with `?archived=true`); with `?search=`, those that match,
    best first. POST: a new conversation."""

    # A generic list view, so the schema declares the page (count, next, previous, results).
    pagination_class = ConversationPagination

    def get_queryset(self):
        params = ConversationListQuerySerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data.get("search", "")
        archived = params.validated_data.get("archived")
        if is_blank(query):
            return selectors.conversation_list(
                user=self.request.user, archived=bool(archived), with_usage=True
            )
        return selectors.conversation_search(
            user=self.request.user, query=query, archived=archived, with_usage=True
        )

    def get_serializer_class(self):
        # What the browsable API builds its form from; the schema is declared below.
        if self.request.method == "POST":
            return ConversationInputSerializer
        return ConversationOutputSerializer

    @extend_schema(
        request=ConversationInputSerializer, responses={201: ConversationOutputSerializer}
    )
    def post(self, request):
        data = ConversationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_create(owner=request.user, **data.validated_data)
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation.pk, with_usage=True
        )
        return Response(
            ConversationOutputSerializer(conversation, context={"request": request}).data,
            status=201,
        )


class ConversationDetailApi(APIView):
    @extend_schema(responses=ConversationOutputSerializer)
    def get(self, request, conversation_id):
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id, with_usage=True
        )
        return Response(
            ConversationOutputSerializer(conversation, context={"request": request}).data
        )

    @extend_schema(request=ConversationInputSerializer, responses=ConversationOutputSerializer)
    def patch(self, request, conversation_id):
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id, with_usage=True
        )
        data = ConversationInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_update(
            conversation=conversation, **data.validated_data
        )
        return Response(
            ConversationOutputSerializer(conversation, context={"request": request}).data
        )

    @extend_schema(responses={204: None})
    def delete(self, request, conversation_id):
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
        services.conversation_delete(conversation=conversation)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListCreateApi(generics.ListAPIView):
    """GET: the history, in cursor pages (oldest first, or newest first with
    `?ordering=-created_at`). POST: send a message; its answer's run starts."""

    starts_a_run = True  # a POST is refused early at capacity (chatsite/handlers.py)
    pagination_class = MessageCursorPagination
    filter_backends = [MessageOrdering]

    @extend_schema_serializer(component_name="MessageSendInput")
    class InputSerializer(MessageEditInputSerializer):
        parent = serializers.UUIDField(
            required=False,
            help_text="The answer this message follows: the last answer of the branch the "
            "sender reads (an assistant message of this conversation, else 400 "
            "`invalid_parent`). Default: the conversation's newest answer.",
        )

    OutputSerializer = MessageSendOutputSerializer

    throttle_scope = "message_send"

    def get_throttles(self):
        # Only sends are throttled; reading history is not.
        return [SendRateThrottle()] if self.request.method == "POST" else []

    def get_queryset(self):
        conversation = selectors.conversation_get_for_user(
            user=self.request.user, conversation_id=self.kwargs["conversation_id"]
        )
        return selectors.message_list(conversation=conversation)

    def get_serializer_class(self):
        # What the browsable API builds its form from; the schema is declared below.
        return self.InputSerializer if self.request.method == "POST" else MessageHistorySerializer

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        # The answers on this page get their HTML rendered once, on their first read.
        services.messages_html_fill(messages=page)
        return page

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            **error_responses(
                InvalidParent, RunActive, ContentTooLong, ContextTooLong, TokenBudgetExhausted
            ),
        },
    )
    def post(self, request, conversation_id):
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.message_send(
            conversation=conversation,
            content=data.validated_data["content"],
            parent_id=data.validated_data.get("parent"),
        )
        return Response(
            self.OutputSerializer(result, context={"request": request}).data, status=201
        )


class StreamTokenApi(APIView):
    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "StreamToken",
                {
                    "token": serializers.CharField(),
                    "expires_in": serializers.IntegerField(),
                    "stream_url": serializers.CharField(),
                },
            )
        },
    )
    def post(self, request, conversation_id):
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
        token = str(services.stream_token_create(user=request.user, conversation=conversation))
        url = reverse("conversation-stream", kwargs={"conversation_id": conversation.pk})
        return Response(
            {
                "token": token,
                "expires_in": chat_settings.STREAM_TOKEN_LIFETIME_SECONDS,
                "stream_url": f"{url}?token={token}",
            },
            status=201,
        )


class MessageCancelApi(APIView):
    # Stopping is quick locally; across processes, give the owner a moment to save.
    WAIT_SECONDS = 2.0

    @extend_schema(
        request=None,
        responses={
            200: MessageOutputSerializer,
            202: MessageOutputSerializer,
            **error_responses(NotAnAnswer, MessageFinished),
        },
    )
    def post(self, request, message_id):
        message = selectors.message_get_for_user(user=request.user, message_id=message_id)
        message = services.message_cancel(message=message, wait=self.WAIT_SECONDS)
        code = status.HTTP_202_ACCEPTED if message.is_active else status.HTTP_200_OK
        return Response(
            MessageOutputSerializer(message, context={"request": request}).data, status=code
        )


class MessageRegenerateApi(APIView):
    starts_a_run = True
    throttle_scope = "message_send"
    throttle_classes = [SendRateThrottle]

    @extend_schema(
        request=None,
        responses={
            201: MessageOutputSerializer,
            **error_responses(NotAnAnswer, RunActive, ContextTooLong, TokenBudgetExhausted),
        },
    )
    def post(self, request, message_id):
        message = selectors.message_get_for_user(user=request.user, message_id=message_id)
        answer = services.message_regenerate(message=message)
        return Response(
            MessageOutputSerializer(answer, context={"request": request}).data, status=201
        )


class MessageEditApi(APIView):
    """Send new content in place of a user message: a new branch from that turn."""

    starts_a_run = True
    throttle_scope = "message_send"
    throttle_classes = [SendRateThrottle]

    @extend_schema(
        request=MessageEditInputSerializer,
        responses={
            201: MessageSendOutputSerializer,
            **error_responses(
                NotAUserMessage,
                RunActive,
                ContentTooLong,
                ContextTooLong,
                TokenBudgetExhausted,
            ),
        },
    )
    def post(self, request, message_id):
        message = selectors.message_get_for_user(user=request.user, message_id=message_id)
        data = MessageEditInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.message_edit(message=message, content=data.validated_data["content"])
        return Response(
            MessageSendOutputSerializer(result, context={"request": request}).data, status=201
        )


class ErrorsAreJson(BaseContentNegotiation):
    """For a view whose `?format=` names what it answers with, not a renderer.

    DRF reads `?format=` as its URL_FORMAT_OVERRIDE and answers a format none of the
    view's renderers has (`md`) with 404 before the view runs. Here the view reads it
    itself, and everything DRF renders (the errors) is JSON, whatever the client accepts.
    """

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ConversationExportApi(APIView):
    """The conversation as a file to download: Markdown or JSON (chat/export.py)."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = ErrorsAreJson

    class FilterSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=sorted(export.FORMATS))

    @extend_schema(
        operation_id="conversations_export",
        parameters=[
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                required=True,
                enum=sorted(export.FORMATS),
                description="`md`: Markdown for people. `json`: the documented JSON "
                "document (`chatsite.conversation`, version 1).",
            )
        ],
        responses={
            (200, "text/markdown"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The conversation as Markdown, as an attachment "
                "(`Content-Disposition`): a title, its model and dates, then every "
                "message oldest first with its time; statuses other than complete and "
                "regenerated answers are noted.",
            ),
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="The conversation as JSON, as an attachment: `format`, "
                "`version`, `exported_at`, `conversation` {id, title, system_prompt, model, "
                "created_at, updated_at} and `messages`, oldest first, each with id, role, "
                "content, status, created_at, completed_at, reply_to, stop_reason, "
                "input_tokens, output_tokens, error_code, error_message, attempt, attempts "
                "and superseded (an answer a regenerated one replaced).",
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="- `invalid`: `format` is missing or not `md` or `json`.",
            ),
        },
    )
    def get(self, request, conversation_id):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = query.validated_data["format"]
        conversation = selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
        exported_at = timezone.now()
        return StreamingHttpResponse(
            export.export_stream(conversation=conversation, fmt=fmt, exported_at=exported_at),
            content_type=export.FORMATS[fmt].media_type,
            headers={
                "Content-Disposition": export.content_disposition(conversation, fmt, exported_at),
                # A copy of the user's messages: not for shared caches.
                "Cache-Control": "private, no-store",
            },
        )


@extend_schema_serializer(component_name="ChatModel")
class ChatModelSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="What a conversation's `model` is set to.")
    label = serializers.CharField(help_text="Its name for people.")
    context_tokens = serializers.IntegerField(
        help_text="Its context window: the history sent with an answer is cut to fit it."
    )
    max_output_tokens = serializers.IntegerField(help_text="Its longest answer, in tokens.")


class ModelListApi(APIView):
    """The models conversations may use (`CHAT_MODELS`), in the site's order."""

    @extend_schema_serializer(component_name="ChatModelList")
    class OutputSerializer(serializers.Serializer):
        default = serializers.CharField(help_text="The id new conversations use.")
        results = ChatModelSerializer(many=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request):
        data = {"default": catalog.default_model().id, "results": catalog.offered_models()}
        return Response(self.OutputSerializer(data).data)
