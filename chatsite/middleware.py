"""Site-wide middleware."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin

from chat.errors import DatabaseUnavailable
from chat.reconnect import CONNECTION_ERRORS

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view whose database connection failed under it answers 503
    `database_unavailable` with Retry-After, in the API's JSON error body, not 500.

    Connections that die idle are replaced before use (`chatsite/postgresql/`), so
    this is only a request that was mid-statement when it happened; retrying it is
    the client's call, as for any 503 (its transaction was rolled back with the
    connection). DRF's views end up here too: its exception handler leaves errors it
    does not know to Django.
    """

    def process_exception(self, request, exception):
        if not isinstance(exception, CONNECTION_ERRORS):
            return None
        logger.warning(
            "%s %s: the database connection failed (%s); answered 503",
            request.method,
            request.path,
            type(exception).__name__,
        )
        error = DatabaseUnavailable()
        return JsonResponse(error.body, status=error.status_code, headers=error.headers)
