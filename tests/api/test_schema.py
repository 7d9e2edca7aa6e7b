"""The served OpenAPI schema, Swagger UI without a CDN, and schemathesis against the API.

schemathesis loads the schema from `/api/v1/schema/` through Django's WSGI application and
sends generated requests (valid and invalid) at every operation: no answer may be a server
error or differ from the schema (status codes, content types, bodies).
"""

from __future__ import annotations

import zlib

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from luascripts import services as script_services
from tenants.audit import Actor

from .conftest import PASSING_TESTS, SCRIPT

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_3_with_every_resource(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {
        "/api/v1/tenants/", "/api/v1/tenants/{slug}/", "/api/v1/tenants/{slug}/backends/",
        "/api/v1/tenants/{slug}/backends/{name}/", "/api/v1/tenants/{slug}/scripts/",
        "/api/v1/tenants/{slug}/scripts/{version}/",
        "/api/v1/tenants/{slug}/scripts/{version}/activate/",
        "/api/v1/tenants/{slug}/scripts/{version}/diff/",
        "/api/v1/tenants/{slug}/scripts/validate/", "/api/v1/tenants/{slug}/simulate/",
        "/api/v1/tenants/{slug}/config/",
    } <= paths
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"]["scheme"] == "bearer" and "basicAuth" not in schemes
    publish = schema["paths"]["/api/v1/tenants/{slug}/scripts/"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "404", "413", "422"} <= set(publish)


def test_swagger_ui_comes_from_our_own_static_files(client):
    response = client.get("/api/v1/schema/swagger/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()


KEYS: dict[str, str] = {}


@pytest.fixture
def api_schema(acme, make_key, settings):
    settings.CHISTONE_API = {"WRITE_RATE": None}
    KEYS["raw"] = make_key(name="schemathesis")
    actor = Actor(name="fixture")
    version, _ = script_services.publish_version(actor=actor, tenant=acme, source=SCRIPT,
                                                 tests=PASSING_TESTS)
    script_services.activate_version(actor=actor, tenant=acme, version=version)
    # Django's handler would close the test's connection (and its transaction) per request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


REAL = {"slug": "acme", "name": "users-v1", "version": 1}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def aim(case) -> None:
    """Point about half of the requests at objects that exist, so the handlers run for real."""
    params = case.path_parameters or {}
    if params and zlib.crc32(repr(sorted(params.items())).encode()) % 2 == 0:
        for name in params:
            if name in REAL:
                params[name] = REAL[name]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid-requests", "invalid-requests"])
def test_api_matches_its_schema(api_schema, mode):
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 17
    for operation in operations:

        @hypothesis_settings(max_examples=6, deadline=None, derandomize=True, database=None,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            aim(case)
            # Each request in a savepoint that is rolled back: a DELETE must not starve the rest.
            with transaction.atomic():
                try:
                    case.call_and_validate(headers={"Authorization": f"Bearer {KEYS['raw']}"},
                                           checks=CHECKS)
                finally:
                    transaction.set_rollback(True)

        try:
            check()
        except Exception as exc:  # collected, so one run reports every operation at fault
            failures.append(f"{operation.method.upper()} {operation.path}:\n{exc}")
    assert not failures, "\n\n".join(failures)
