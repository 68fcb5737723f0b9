from django.contrib import admin
from django.urls import include, path

from chat import streaming

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include("chat.api.urls")),
    path(
        "stream/conversations/<uuid:conversation_id>/",
        streaming.conversation_stream,
        name="conversation-stream",
    ),
    path("", include("chat.urls")),
]
