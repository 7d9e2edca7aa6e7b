"""The API's one exception handler: every error is `{error, detail, request_id}` JSON.

    tenants.errors.ServiceError    its own status_code and code; `detail` extras are merged
    (InvalidInput 400, NotFound 404, Conflict 409, PreconditionFailed 412, PayloadTooLarge 413,
     Unprocessable 422, Unavailable 503; ScopeRequired 403 below)
    DRF ValidationError / ParseError            400 invalid / parse_error  (+ `fields`)
    NotAuthenticated / AuthenticationFailed     401 not_authenticated / authentication_failed
    PermissionDenied (DRF or Django)            403 permission_denied
    Http404 / NotFound                          404 not_found
    MethodNotAllowed, NotAcceptable, UnsupportedMediaType   405 / 406 / 415
    RequestDataTooBig                           413 too_large
    Throttled                                   429 throttled (+ Retry-After)
    anything else                               500 server_error (logged, no detail sent)

Extras: a script's diagnostics travel as `errors: [{line, column, message}]`, script test
results as `test_results: [{name, passed, detail}]`, field errors as `fields: {name: [...]}`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from chistone_site.middleware import UNAVAILABLE_MESSAGE, is_database_outage
from routing import request_id
from tenants.errors import ServiceError

log = logging.getLogger("chistone.api")

REQUEST_ID_HEADER = request_id.HEADER


class ScopeRequired(ServiceError):
    """A plan needs a scope the caller lacks (e.g. a config document that activates)."""

    status_code = 403
    code = "permission_denied"


def request_id_for(request) -> str:
    """The caller's X-Request-ID when it is sane, else a new one; fixed once per request."""
    if request is None:
        return request_id.new_request_id()
    django_request = getattr(request, "_request", request)
    existing = getattr(django_request, "chistone_request_id", None)
    if existing:
        return existing
    chosen = request_id.accept_or_new(django_request.META.get("HTTP_X_REQUEST_ID"))
    django_request.chistone_request_id = chosen
    return chosen


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    exceptions.ValidationError: "invalid",
}


def _drf_code(exc: exceptions.APIException) -> str:
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return exc.default_code or "error"


def _body(request, code: str, detail: str, extra: dict[str, Any] | None = None) -> dict:
    body: dict[str, Any] = {"error": code, "detail": detail}
    for key, value in (extra or {}).items():
        if key not in ("error", "detail", "request_id"):
            body[key] = value
    body["request_id"] = request_id_for(request)
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    headers: dict[str, str] = {}

    if isinstance(exc, ServiceError):
        extra = exc.detail if isinstance(exc.detail, dict) else {}
        if extra and not {"errors", "test_results", "version", "plan"} & set(extra):
            extra = {"fields": extra}  # the services' field errors
        status, body = exc.status_code, _body(request, exc.code, exc.message, extra)
    elif is_database_outage(exc):
        log.error("database unavailable: %s", exc)
        status, body = 503, _body(request, "unavailable", UNAVAILABLE_MESSAGE)
        headers["Retry-After"] = "5"
    elif isinstance(exc, RequestDataTooBig):
        status, body = 413, _body(request, "too_large", "The request body is too large.")
    elif isinstance(exc, Http404):
        status, body = 404, _body(request, "not_found", "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        status, body = 403, _body(request, "permission_denied", str(exc) or "Permission denied.")
    elif isinstance(exc, exceptions.APIException):
        status = exc.status_code
        if isinstance(exc, exceptions.ValidationError):
            body = _body(request, "invalid", _first_message(exc.detail),
                         {"fields": exc.detail if isinstance(exc.detail, dict)
                          else {"non_field_errors": exc.detail}})
        else:
            body = _body(request, _drf_code(exc), _first_message(exc.detail))
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)) \
                and status == 403:
            status = 401  # our API always names its scheme; never a 403 for missing credentials
            headers.setdefault("WWW-Authenticate", 'Bearer realm="chistone-api"')
    else:
        log.exception("unhandled error in %s", getattr(request, "path", "?"),
                      extra={"request_id": request_id_for(request)})
        status, body = 500, _body(request, "server_error",
                                  "Internal error; the server log has this request id.")

    response = Response(body, status=status, headers=headers)
    response[REQUEST_ID_HEADER] = body["request_id"]
    return response
