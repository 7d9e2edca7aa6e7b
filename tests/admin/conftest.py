"""Fixtures for the admin tests: two tenants, a superuser and an operator limited to one."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from luascripts import services as script_services
from tenants import access, services
from tenants.audit import Actor

GOOD = 'chi.get("/hello", function(req) return respond(200, "hi") end)\n'
GOOD2 = (
    'chi.get("/hello", function(req) return respond(200, "hello") end)\n'
    'chi.get("/users/{id}", function(req)\n'
    '  return proxy("api", {path = "/u/" .. req.params.id})\nend)\n'
)
# A syntax error on line 3: the call on line 2 is never closed.
BAD = 'chi.get("/hello", function(req)\n  return respond(200, "hi"\nend)\n'

OPERATOR_PERMS = [
    "tenants.view_tenant", "tenants.change_tenant", "tenants.add_tenant",
    "tenants.view_backend", "tenants.add_backend", "tenants.change_backend",
    "tenants.delete_backend", "tenants.view_auditevent", "tenants.view_hostclaim",
    "luascripts.view_scriptversion", "luascripts.add_scriptversion",
]


def grant(user, *perms: str) -> None:
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def system():
    return Actor.system("fixture")


@pytest.fixture
def acme(db, system):
    tenant = services.create_tenant(actor=system, slug="acme", name="Acme",
                                    domains=["acme.example.com"])
    services.create_backend(actor=system, tenant=tenant, name="api",
                            url="http://127.0.0.1:9001")
    return tenant


@pytest.fixture
def globex(db, system):
    tenant = services.create_tenant(actor=system, slug="globex", name="Globex",
                                    path_prefix="/globex")
    services.create_backend(actor=system, tenant=tenant, name="secret-backend",
                            url="http://127.0.0.1:9002")
    return tenant


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def operator(db, acme, superuser):
    user = get_user_model().objects.create_user("olga", "olga@example.com", "pw-olga-123",
                                                is_staff=True)
    grant(user, *OPERATOR_PERMS)
    access.set_operator_tenants(actor=Actor.for_user(superuser), user=user, tenants=[acme])
    return get_user_model().objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def op_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def su_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def publish(system):
    def do(tenant, source, message="", tests=()):
        version, _ = script_services.publish_version(actor=system, tenant=tenant, source=source,
                                                     message=message, tests=list(tests))
        return version

    return do


@pytest.fixture
def activate(system):
    def do(tenant, version):
        return script_services.activate_version(actor=system, tenant=tenant, version=version)

    return do
