"""One loader for every pluggable backend: the provider, the replay buffer, stream slots.

Like Django's caches and task backends (`django/utils/connection.py`): a settings
dict `{"BACKEND": "dotted.path.Class", "OPTIONS": {...}}` names the class, which is
built once per process with the options as keyword arguments, and built again after
a test changes the setting.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .conf import chat_settings

T = TypeVar("T")


class Backend(Generic[T]):
    """`get_replay_buffer = Backend("REPLAY_BUFFER")`; `get_replay_buffer()` is the instance."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._instance: T | None = None
        self._lock = threading.Lock()
        setting_changed.connect(self._reset, weak=False)

    def __call__(self) -> T:
        instance = self._instance
        if instance is None:
            with self._lock:
                if self._instance is None:
                    self._instance = self.build()
                instance = self._instance
        return instance

    def build(self) -> T:
        """A new instance, not the process's: for work on an event loop of its own (a
        management command), since a Redis client belongs to the loop it first ran on."""
        config = getattr(chat_settings, self.name)
        backend = import_string(config["BACKEND"])
        return backend(**config.get("OPTIONS", {}))

    def reset(self) -> None:
        self._instance = None

    def _reset(self, *, setting: str, **kwargs) -> None:
        if setting == f"CHAT_{self.name}":
            self.reset()
