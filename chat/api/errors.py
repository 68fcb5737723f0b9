"""Every API error is JSON `{"code", "message", ...}` with the right status."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import ChatError


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc, context):
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
