from django.contrib import admin
from django.urls import include, path

from chat import streaming
from chat.api import errors

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

# JSON under /api/ and /stream/, Django's pages elsewhere (see chat/api/errors.py).
handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error
