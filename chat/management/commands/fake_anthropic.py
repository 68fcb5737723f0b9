"""``manage.py fake_anthropic``: run the fake Anthropic Messages API server.

A thin wrapper over ``chat.fake_anthropic`` (which stays Django-free so benchmarks can
start it directly with ``python -m chat.fake_anthropic``). Point the site at it with
``ANTHROPIC_BASE_URL=http://127.0.0.1:8099``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from chat import fake_anthropic


class Command(BaseCommand):
    help = "Serve a fake Anthropic Messages API (streaming SSE) for development and tests."

    # The server touches neither the database nor the system checks' concerns.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        fake_anthropic.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = fake_anthropic.config_from_args(options)
        fake_anthropic.run(options["host"], options["port"], config)
