"""Every API error is JSON `{"code", "message", ...}` with the right status.

`exception_handler` is DRF's (errors raised in API views); `bad_request`, `permission_denied`,
`page_not_found` and `server_error` are the root URLconf's `handler400` … `handler500`,
for what Django answers itself — no URL matched (a non-UUID id, an unknown path), a
suspicious request refused by middleware — which are JSON under the API's and the
stream's paths, and Django's HTML pages elsewhere.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import BadRequest, ChatError, Forbidden, NotFound, RequestTooLarge, ServerError

# The JSON API and the SSE endpoint (chatsite/urls.py): clients there read JSON errors.
JSON_PATH_PREFIXES = ("/api/", "/stream/")


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, SuspiciousOperation):
        exc = _suspicious(exc)
    if isinstance(exc, ChatError):
        return Response(exc.body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        codes = exc.get_codes()
        response.data = {
            "code": "invalid",
            "message": _first_message(exc.detail),
            "errors": exc.detail,
            "error_codes": codes,
        }
        return response
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        if isinstance(detail, dict):  # simplejwt's InvalidToken: {"detail", "code", "messages"}
            code = str(detail.get("code", exc.default_code))
            detail = detail.get("detail", exc.default_detail)
        else:
            code = exc.get_codes() if isinstance(detail, str) else exc.default_code
        response.data = {"code": code, "message": str(detail)}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response.data["retry_after"] = exc.wait
    if response.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        response.data["code"] = "method_not_allowed"
    return response


def _suspicious(exc: SuspiciousOperation) -> ChatError:
    """A body Django refuses to parse (too many fields or files, too large). Django answers
    these with its HTML 400 page and logs a traceback; a client's mistake is one line."""
    # The logger Django's own handler uses, so security logging sees it as before.
    logging.getLogger(f"django.security.{exc.__class__.__name__}").warning("%s", exc)
    if isinstance(exc, RequestDataTooBig):  # chatsite/handlers.py refuses most of these first
        return RequestTooLarge()
    return BadRequest(str(exc))


def _wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(JSON_PATH_PREFIXES)


def _json(error: ChatError) -> JsonResponse:
    return JsonResponse(error.body, status=error.status_code, headers=error.headers)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return _json(BadRequest())
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return _json(Forbidden())
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """No URL matched: an unknown path, or an id that is not a UUID (ids are UUIDs, so
    no such object exists: 404, the same answer as for an unknown UUID)."""
    if _wants_json(request):
        return _json(NotFound())
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return _json(ServerError())
    return defaults.server_error(request)
