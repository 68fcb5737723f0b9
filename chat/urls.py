"""Server-rendered chat pages; the JSON API and the SSE stream live elsewhere."""

from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<uuid:conversation_id>/", views.conversation, name="conversation"),
]
