from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from . import root, views

urlpatterns = [
    path("", root.ApiRootApi.as_view(), name=root.ROOT),
    path("auth/token/", TokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("models/", views.ModelListApi.as_view(), name="model-list"),
    path("conversations/", views.ConversationListCreateApi.as_view(), name="conversation-list"),
    path(
        "conversations/<uuid:conversation_id>/",
        views.ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<uuid:conversation_id>/messages/",
        views.MessageListCreateApi.as_view(),
        name="message-list",
    ),
    path(
        "conversations/<uuid:conversation_id>/export/",
        views.ConversationExportApi.as_view(),
        name="conversation-export",
    ),
    path(
        "conversations/<uuid:conversation_id>/stream-token/",
        views.StreamTokenApi.as_view(),
        name="stream-token",
    ),
    path(
        "messages/<uuid:message_id>/cancel/",
        views.MessageCancelApi.as_view(),
        name="message-cancel",
    ),
    path(
        "messages/<uuid:message_id>/regenerate/",
        views.MessageRegenerateApi.as_view(),
        name="message-regenerate",
    ),
    path(
        "messages/<uuid:message_id>/edit/",
        views.MessageEditApi.as_view(),
        name="message-edit",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
