"""OpenAPI details drf-spectacular cannot infer: our auth schemes and our error answers."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from chistone_site.api.serializers import ErrorSerializer

ERRORS_ALWAYS = ("401", "403", "404", "405", "406", "429")
ERRORS_WITH_INPUT = ("400", "415")
ERRORS_OF_WRITES = ("409", "412", "413", "422")


class ChistoneAutoSchema(AutoSchema):
    """Documents the error answers of the one exception handler on every operation."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = list(ERRORS_ALWAYS)
        if self.method in ("POST", "PUT", "PATCH") or self._get_parameters():
            codes += ERRORS_WITH_INPUT
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes += ERRORS_OF_WRITES
        for code in codes:
            responses.setdefault(code, self._get_response_for_code(
                ErrorSerializer, code, direction=direction))
        return responses


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "chistone_site.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "chs_<prefix>_<secret>",
                "description": "An API key: `Authorization: Bearer <key>` (or `Api-Key <key>`)."}


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "chistone_site.api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "A logged-in staff user's session (CSRF token required)."}
