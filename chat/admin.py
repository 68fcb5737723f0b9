from django.contrib import admin
from django.db.models import Count

from .models import Conversation, Message

_MESSAGE_READONLY = (
    "id",
    "role",
    "status",
    "stop_reason",
    "model",
    "input_tokens",
    "output_tokens",
    "usage_estimated",
    "context_omitted_turns",
    "error_code",
    "error_message",
    "created_at",
    "completed_at",
)


class MessageInline(admin.StackedInline):
    model = Message
    extra = 0
    fields = ("role", "status", "content", *_MESSAGE_READONLY[3:])
    readonly_fields = _MESSAGE_READONLY
    ordering = ("created_at",)
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "model", "message_count", "created_at", "updated_at")
    list_filter = ("model", "owner", "messages__status")
    search_fields = ("title", "system_prompt", "owner__username", "messages__content")
    readonly_fields = ("id", "created_at", "updated_at")
    list_select_related = ("owner",)
    inlines = [MessageInline]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj._message_count

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        # Searching messages joins them in; distinct keeps one row per conversation.
        return queryset.distinct(), False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "role",
        "status",
        "stop_reason",
        "model",
        "input_tokens",
        "output_tokens",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "role", "model", "conversation__owner")
    search_fields = ("content", "error_message", "conversation__title")
    readonly_fields = (*_MESSAGE_READONLY, "conversation")
    list_select_related = ("conversation",)
    date_hierarchy = "created_at"
