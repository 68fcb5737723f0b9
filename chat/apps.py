from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A user's open streams end when their access does (chat/access.py).
        from .access import connect_signals

        connect_signals()
        # `CHAT_MODELS` is checked by `manage.py check` and at every server's start.
        from . import catalog  # noqa: F401
