"""Model providers are backends, chosen by `settings.CHAT_PROVIDER`.

`CHAT_PROVIDER = {"BACKEND": "dotted.path.Class", "OPTIONS": {...}}`; the class
is built with the options as keyword arguments, once per process.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .base import (
    ChatTurn,
    Provider,
    ProviderError,
    ProviderRequest,
    StreamEnd,
    TextDelta,
)


@cache
def get_provider() -> Provider:
    config = settings.CHAT_PROVIDER
    return import_string(config["BACKEND"])(**config.get("OPTIONS", {}))


@receiver(setting_changed)
def _reset_provider(*, setting: str, **kwargs) -> None:
    if setting == "CHAT_PROVIDER":
        get_provider.cache_clear()


__all__ = [
    "ChatTurn",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "StreamEnd",
    "TextDelta",
    "get_provider",
]
