"""Control-plane middleware: a database outage is a clear 503, never a stack trace.

Gateway workers keep serving their last snapshot when the database is down; the control plane
cannot change anything then, and says so: 503 with Retry-After and a message an operator or a
CI pipeline can act on (JSON for the API, plain text elsewhere).
"""

from __future__ import annotations

import json
import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse

log = logging.getLogger("chistone.control")

UNAVAILABLE_MESSAGE = (
    "The configuration database is unreachable, so nothing can be read or changed right now. "
    "Tenant traffic keeps flowing with the last loaded configuration. Retry shortly."
)


def is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    # psycopg reports a lost server as a DatabaseError subclass in some paths.
    return isinstance(exc, DatabaseError) and "connect" in str(exc).lower()


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_database_outage(exception):
            return None
        log.error("control plane: database unavailable: %s", exception)
        if request.path.startswith("/api/"):
            from chistone_site.api.exceptions import REQUEST_ID_HEADER, request_id_for

            # The API's one request-id rule (routing.request_id): a sane client id, else new.
            request_id = request_id_for(request)
            body = json.dumps({"error": "unavailable", "detail": UNAVAILABLE_MESSAGE,
                               "request_id": request_id})
            response = HttpResponse(body, status=503, content_type="application/json")
            response[REQUEST_ID_HEADER] = request_id
        else:
            response = HttpResponse(UNAVAILABLE_MESSAGE, status=503,
                                    content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "5"
        return response
