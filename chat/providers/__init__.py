"""Model providers are backends, chosen by `CHAT_PROVIDER` (see chat/backends.py).

`CHAT_PROVIDER = {"BACKEND": "dotted.path.Class", "OPTIONS": {...}}`; the class
is built with the options as keyword arguments, once per process.
"""

from __future__ import annotations

from ..backends import Backend
from .base import (
    ChatTurn,
    Provider,
    ProviderError,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    Usage,
)

get_provider: Backend[Provider] = Backend("PROVIDER")


__all__ = [
    "ChatTurn",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "StreamEnd",
    "TextDelta",
    "Usage",
    "get_provider",
]
