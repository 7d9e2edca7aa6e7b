"""The control plane's one exception hierarchy.

Services raise these; the REST API, the admin and the management commands translate them in
one place each (the API maps `status_code` directly). Messages are written for a person.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(ServiceError):
    """The request is well-formed but a value is not acceptable (field errors in `detail`)."""

    status_code = 400
    code = "invalid"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    """The change collides with existing state (duplicate name, host+prefix claimed)."""

    status_code = 409
    code = "conflict"


class PreconditionFailed(ServiceError):
    """An If-Match style precondition no longer holds (concurrent change)."""

    status_code = 412
    code = "precondition_failed"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "too_large"


class Unprocessable(ServiceError):
    """The input is valid but cannot be applied, e.g. script tests failed before activation."""

    status_code = 422
    code = "unprocessable"


class Unavailable(ServiceError):
    """A dependency (the database) is unreachable; retry later."""

    status_code = 503
    code = "unavailable"


class Forbidden(ServiceError):
    """The caller may not make this choice (e.g. overriding failed script tests)."""

    status_code = 403
    code = "permission_denied"
