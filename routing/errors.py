"""The data plane's errors, and the one place where they become HTTP responses.

    GatewayError                     500 internal_error
    +-- BadRequest                   400 bad_request
    |   +-- UriTooLong               414 uri_too_long
    |   +-- HeadersTooLarge          431 headers_too_large
    |   +-- PayloadTooLarge          413 payload_too_large
    |   +-- RequestTimeout           408 request_timeout (a script waited for a slow body)
    +-- TenantNotFound               404 no_tenant
    +-- RouteNotFound                404 no_route
    +-- MethodNotAllowed             405 method_not_allowed (with Allow)
    +-- ScriptFailed                 500 script_error (detail logged, never sent)
    +-- BadGateway                   502 bad_gateway
    |   +-- BackendRefused           502 backend_refused  (nothing reached the backend)
    |   +-- BackendBroke             502 backend_broke    (reset or invalid response)
    |       +-- InvalidResponse          (a response that cannot be framed for the client)
    |   +-- BodyNotReplayable        502 body_not_replayable (a fallback after the body
    |   |                                was streamed to another backend)
    |   +-- ResponseTooLarge         502 response_too_large (a script read a backend body
    |                                    over its limit)
    +-- ServiceUnavailable           503 unavailable (with Retry-After)
    |   +-- NoHealthyBackend         503 no_healthy_backend
    |   +-- ConfigNotLoaded          503 config_not_loaded
    |   +-- TenantUnavailable        503 tenant_unavailable (its script cannot run)
    |   +-- ScriptBusy               503 script_busy (the tenant's runtime holds as many
    |                                    bodies of concurrent requests as it can)
    +-- GatewayTimeout               504 gateway_timeout
        +-- ConnectTimeout           504 connect_timeout (nothing reached the backend)

Every error answer is JSON: {"error": code, "detail": text, "request_id": id}.
"""

from __future__ import annotations

import json
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    public = True  # False: the detail goes to the log only; the client sees a generic text

    def __init__(self, detail: str = "", *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail or self.default_detail())
        self.detail = detail or self.default_detail()
        self.headers = headers

    def default_detail(self) -> str:
        return HTTPStatus(self.status).phrase

    def public_detail(self) -> str:
        return self.detail if self.public else self.default_detail()


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class UriTooLong(BadRequest):
    status, code = 414, "uri_too_long"


class HeadersTooLarge(BadRequest):
    status, code = 431, "headers_too_large"


class PayloadTooLarge(BadRequest):
    status, code = 413, "payload_too_large"


class RequestTimeout(BadRequest):
    status, code = 408, "request_timeout"


class TenantNotFound(GatewayError):
    status, code = 404, "no_tenant"


class RouteNotFound(GatewayError):
    status, code = 404, "no_route"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"

    def __init__(self, detail: str = "", *, allow: tuple[str, ...] = ()) -> None:
        super().__init__(detail, headers=(("allow", ", ".join(allow)),) if allow else ())
        self.allow = allow


class ScriptFailed(GatewayError):
    status, code, public = 500, "script_error", False

    def default_detail(self) -> str:
        return "The tenant's route script failed; see the gateway log for this request id."


class BadGateway(GatewayError):
    status, code = 502, "bad_gateway"


class BackendRefused(BadGateway):
    code = "backend_refused"


class BackendBroke(BadGateway):
    code = "backend_broke"


class InvalidResponse(BackendBroke):
    """The backend's answer cannot be passed on as valid HTTP (a control character in a
    header, a malformed header name): the client gets a 502, never the broken answer."""


class UpgradeRefused(BadGateway):
    """A backend answered a WebSocket handshake with something other than 101."""

    code = "upgrade_refused"


class BodyNotReplayable(BadGateway):
    code = "body_not_replayable"


class ResponseTooLarge(BadGateway):
    code = "response_too_large"


class ServiceUnavailable(GatewayError):
    status, code = 503, "unavailable"

    def __init__(self, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(detail, headers=(("retry-after", str(retry_after)),))
        self.retry_after = retry_after


class NoHealthyBackend(ServiceUnavailable):
    code = "no_healthy_backend"


class ConfigNotLoaded(ServiceUnavailable):
    code = "config_not_loaded"


class TenantUnavailable(ServiceUnavailable):
    code = "tenant_unavailable"


class ScriptBusy(ServiceUnavailable):
    code = "script_busy"


class GatewayTimeout(GatewayError):
    status, code = 504, "gateway_timeout"


class ConnectTimeout(GatewayTimeout):
    code = "connect_timeout"


def json_body(code: str, detail: str, request_id: str) -> bytes:
    return json.dumps({"error": code, "detail": detail, "request_id": request_id}).encode()


def error_response(error: GatewayError, request_id: str) -> tuple[int, Headers, bytes]:
    """The status, headers and JSON body that answer `error`."""
    body = json_body(error.code, error.public_detail(), request_id)
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers)
    return error.status, headers, body


def reject_error(status: int, message: str, allow: tuple[str, ...] = ()) -> GatewayError:
    """A script's (or router's) RejectAction as an error of the hierarchy."""
    if status == 404:
        return RouteNotFound(message or "No route matches this path.")
    if status == 405:
        return MethodNotAllowed(message or "Method not allowed.", allow=allow)
    error = GatewayError(message or _phrase(status))
    error.status = status if 400 <= status <= 599 else 403
    error.code = "rejected"
    return error


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Rejected"
