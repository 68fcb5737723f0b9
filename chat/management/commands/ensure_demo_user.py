"""Create (or reset) the demo login printed by `make run`, for local use only."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the local demo user (staff, so the admin works too) and print its login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")
        # `make run` asks for both in one process: each Django start costs seconds of
        # imports (Twisted, DRF), the better part of a second run's wait for the banner.
        parser.add_argument(
            "--migrate", action="store_true", help="Apply migrations first (migrate --no-input)."
        )

    def handle(self, *args, username: str, password: str, migrate: bool, **options):
        if not settings.DEBUG:
            raise CommandError("Refusing to create a demo login with DEBUG off.")
        if migrate:
            call_command("migrate", interactive=False, verbosity=options["verbosity"])
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        self.stdout.write(f"Demo login: username {username!r}, password {password!r}")
