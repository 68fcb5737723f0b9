"""``manage.py end_stale_runs``: end now the answers whose process is gone (the sweeper's
work, once); ``--all`` stops every active answer, e.g. before maintenance."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from chat import services


class Command(BaseCommand):
    help = (
        "End every active answer whose run lease has lapsed (its process died), as the "
        "sweeper would, and print what was ended. --all: stop every active answer first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all",
            action="store_true",
            dest="every",
            help="Stop every active answer, live ones included (they end `cancelled`).",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="With --all: seconds to wait for live runs to stop before sweeping the rest.",
        )

    def handle(self, *args, every: bool, wait: float, **options):
        ended = services.runs_end_stale(every=every, wait=wait)
        for message in ended:
            reason = f" ({message.error_code})" if message.error_code else ""
            self.stdout.write(
                f"{message.pk} {message.status}{reason} conversation {message.conversation_id}"
            )
        self.stdout.write(f"Ended {len(ended)} answer{'' if len(ended) == 1 else 's'}.")
