"""ASGI entry point: daphne (or any ASGI server) serves `application`."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.local")
django.setup(set_prefix=False)

from chatsite.handlers import ChatsiteASGIHandler  # noqa: E402  (needs settings)

application = ChatsiteASGIHandler()
