"""``manage.py purge_replay_buffers``: delete the Redis replay buffers of answers that have
ended (or were deleted); active answers keep theirs."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from chat import services


class Command(BaseCommand):
    help = (
        "Delete the shared replay buffers of answers that are no longer active (the database "
        "holds their text). Only a Redis buffer can be purged from a command."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args, dry_run: bool, **options):
        try:
            result = services.replay_buffers_purge(dry_run=dry_run)
        except ValueError:
            # Not an error: that buffer expires its entries itself, and a command (a process
            # of its own) would only see its own, empty one.
            self.stdout.write(
                "Nothing to purge: the replay buffer is in memory, in each server process, "
                "which a command cannot reach (it expires its entries itself). Purging "
                "applies to the Redis buffer (REDIS_URL)."
            )
            return
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} the buffers of {result.purged} of {result.scanned} buffered messages."
        )
