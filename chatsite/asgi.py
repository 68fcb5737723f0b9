"""ASGI entry point: daphne (or any ASGI server) serves `application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.local")

application = get_asgi_application()
