"""Group 7: control-plane authentication and authorisation (REST API and admin).

No key, a bad, expired or revoked key: 401. A key for another tenant: 404, exactly like a
tenant that does not exist. A key without the scope: 403. An operator limited to one tenant:
404 for everything of another one, pages and popups alike. Session writes without a CSRF
token: 403. Login brute force: 429 (recorded per client address by django-axes). Refusals
change nothing and no change is audited for them; allowed writes are audited under the key's
name.
"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from chistone_site.api import keys
from chistone_site.api.models import ApiKey
from luascripts.models import ScriptVersion
from tenants.audit import Actor
from tenants.models import AuditEvent, Backend, Tenant

GOOD = 'chi.get("/hello", function(req) return respond(200, "hi") end)\n'
GOOD2 = 'chi.get("/hello", function(req) return respond(200, "hello") end)\n'


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tenants(acme, globex, publish):
    """acme and globex, each with one published version (v1)."""
    publish(acme, GOOD)
    publish(globex, GOOD)
    return acme, globex


CHANGES = r"^(tenant|backend|script|apikey|access)\."  # audit actions recording a change


def world() -> tuple:
    """Everything a refused request must leave as it was (a refusal may be recorded, but no
    change may be)."""
    return (
        list(Tenant.objects.order_by("slug").values_list(
            "slug", "name", "active", "active_version_id", "config_version")),
        list(Backend.objects.order_by("pk").values_list("tenant_id", "name", "url", "enabled")),
        list(ScriptVersion.objects.order_by("pk").values_list("tenant_id", "number")),
        AuditEvent.objects.filter(action__regex=CHANGES).count(),
    )


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert body["error"] == code and body["request_id"] == response["X-Request-ID"], body
    return body


def call(client, method: str, path: str, body=None):
    return getattr(client, method.lower())(f"/api/v1/{path}", body, format="json")


ENDPOINTS = [  # (method, path below /api/v1/ with {t} for the tenant, body)
    ("GET", "tenants/{t}/", None),
    ("PATCH", "tenants/{t}/", {"name": "Owned"}),
    ("DELETE", "tenants/{t}/", None),
    ("GET", "tenants/{t}/backends/", None),
    ("POST", "tenants/{t}/backends/", {"name": "sneaky", "url": "http://127.0.0.1:9"}),
    ("DELETE", "tenants/{t}/backends/secret-backend/", None),
    ("GET", "tenants/{t}/scripts/", None),
    ("POST", "tenants/{t}/scripts/", {"source": GOOD2}),
    ("GET", "tenants/{t}/scripts/1/", None),
    ("POST", "tenants/{t}/scripts/1/activate/", {}),
    ("GET", "tenants/{t}/scripts/1/diff/", None),
    ("POST", "tenants/{t}/scripts/validate/", {"source": GOOD2}),
    ("POST", "tenants/{t}/simulate/", {"path": "/hello"}),
    ("GET", "tenants/{t}/config/", None),
    ("POST", "tenants/{t}/config/", {"document": {"tenant": {"name": "Owned"}}}),
]
ENDPOINT_IDS = [f"{m}-{p.replace('tenants/{t}/', '') or 'tenant'}" for m, p, _ in ENDPOINTS]


# -- who are you? --------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
def test_no_key_is_401_and_changes_nothing(tenants, method, path, body):
    before = world()
    response = call(APIClient(), method, path.format(t="acme"), body)
    error_of(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="chistone-api"'
    assert world() == before


@pytest.mark.django_db
@pytest.mark.parametrize("header", [
    "Basic cm9vdDpwdy1yb290LTEyMw==",  # the superuser's real password, over Basic
    "Token chs_abcdefgh_x", "Bearer", "Bearer  ", "Bearer a b", "Bearer chs_", "chs_x",
    "Bearer " + "A" * 5000,
])
def test_credentials_that_are_not_a_valid_key_are_401(tenants, superuser, header):
    before = world()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    error_of(call(client, "POST", "tenants/acme/scripts/", {"source": GOOD2}), 401,
             "authentication_failed")
    assert world() == before


@pytest.mark.django_db
def test_a_forged_secret_with_a_real_prefix_is_401(tenants, make_key, client_for):
    raw = make_key(tenants=[tenants[0]])
    # "chs_<8-char prefix>_<secret>": the secret is URL-safe base64 and may itself contain
    # "_", so it is cut by position, not at the last underscore (which once left a one-char
    # tail whose reversal was the real key).
    head = raw[:len("chs_") + 8 + 1]
    secret = raw[len(head):]
    forged = head + "".join("A" if c != "A" else "B" for c in secret)  # every char differs
    assert forged != raw and len(forged) == len(raw)
    before = world()
    error_of(call(client_for(forged), "POST", "tenants/acme/scripts/", {"source": GOOD2}), 401,
             "authentication_failed")
    assert world() == before


@pytest.mark.django_db
def test_an_expired_key_is_401_for_reads_and_writes(tenants, make_key, client_for):
    client = client_for(make_key(expires_at=timezone.now() - timedelta(seconds=1)))
    before = world()
    assert "expired" in error_of(call(client, "GET", "tenants/"), 401,
                                 "authentication_failed")["detail"]
    error_of(call(client, "POST", "tenants/acme/scripts/", {"source": GOOD2}), 401,
             "authentication_failed")
    assert world() == before


@pytest.mark.django_db
def test_a_revoked_key_is_401_from_the_next_request_on(tenants, make_key, client_for):
    client = client_for(make_key(name="leaked"))
    assert call(client, "GET", "tenants/acme/").status_code == 200
    keys.revoke_api_key(actor=Actor(name="security"), key=ApiKey.objects.get(name="leaked"))
    before = world()
    for method, path, body in ENDPOINTS[:3]:
        body_ = error_of(call(client, method, path.format(t="acme"), body), 401,
                         "authentication_failed")
        assert "revoked" in body_["detail"]
    assert world() == before


# -- what may you reach? -------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_key_for_another_tenant_gets_404_like_a_missing_tenant(tenants, make_key, client_for,
                                                                  method, path, body):
    acme, globex = tenants
    client = client_for(make_key(tenants=[acme]))  # every scope, but only acme
    before = world()
    foreign = error_of(call(client, method, path.format(t="globex"), body), 404, "not_found")
    missing = error_of(call(client, method, path.format(t="no-such-tenant"), body), 404,
                       "not_found")
    assert foreign["detail"] == missing["detail"]
    assert "globex" not in foreign["detail"] and "Globex" not in str(foreign)
    assert world() == before


@pytest.mark.django_db
def test_a_key_for_one_tenant_lists_only_that_tenant(tenants, make_key, client_for):
    client = client_for(make_key(tenants=[tenants[0]]))
    assert [t["slug"] for t in call(client, "GET", "tenants/").json()] == ["acme"]


@pytest.mark.django_db
@pytest.mark.parametrize("scopes,method,path,body,missing", [
    ("read", "POST", "tenants/acme/scripts/", {"source": GOOD2}, "write"),
    ("read", "POST", "tenants/acme/scripts/1/activate/", {}, "activate"),
    ("read", "PATCH", "tenants/acme/", {"name": "Renamed"}, "write"),
    ("read", "DELETE", "tenants/acme/backends/api/", None, "write"),
    ("read", "POST", "tenants/acme/config/", {"document": {"tenant": {"name": "X"}}}, "write"),
    ("read,write", "POST", "tenants/acme/scripts/1/activate/", {}, "activate"),
    ("read,write", "POST", "tenants/acme/scripts/", {"source": GOOD2, "activate": True},
     "activate"),
    ("read,activate", "POST", "tenants/acme/scripts/", {"source": GOOD2}, "write"),
    ("write,activate", "GET", "tenants/acme/config/", None, "read"),
])
def test_a_key_without_the_scope_is_403(tenants, make_key, client_for, scopes, method, path,
                                        body, missing):
    client = client_for(make_key(scopes=scopes, tenants=[tenants[0]]))
    before = world()
    body_ = error_of(call(client, method, path, body), 403, "permission_denied")
    assert f"lacks the {missing} scope" in body_["detail"]
    assert world() == before


@pytest.mark.django_db
def test_a_tenant_scoped_key_cannot_create_tenants(tenants, make_key, client_for):
    client = client_for(make_key(tenants=[tenants[0]]))
    before = world()
    error_of(call(client, "POST", "tenants/", {"slug": "rogue", "name": "Rogue",
                                               "domains": ["rogue.example"]}),
             403, "permission_denied")
    assert world() == before


@pytest.mark.django_db
def test_allowed_writes_are_audited_under_the_keys_name(tenants, make_key, client_for):
    client = client_for(make_key(name="ci-acme", tenants=[tenants[0]]))
    response = call(client, "POST", "tenants/acme/scripts/", {"source": GOOD2, "activate": True})
    assert response.status_code == 201
    events = list(AuditEvent.objects.filter(actor="apikey:ci-acme").order_by("id").values_list(
        "action", "tenant_slug"))
    assert events == [("script.publish", "acme"), ("script.activate", "acme")]


# -- operators limited to one tenant -------------------------------------------------------

def admin_pages(acme_or_globex, version=1) -> list[str]:
    t = acme_or_globex
    backend = Backend.objects.filter(tenant=t).first()
    event = AuditEvent.objects.filter(tenant_slug=t.slug).first()
    return [
        reverse("admin:tenants_tenant_change", args=[t.pk]),
        reverse("admin:tenants_tenant_change", args=[t.pk]) + "?_popup=1&_to_field=id",
        reverse("admin:tenants_tenant_history", args=[t.pk]),
        reverse("admin:tenants_backend_change", args=[backend.pk]),
        reverse("admin:tenants_backend_change", args=[backend.pk]) + "?_popup=1",
        reverse("admin:tenants_backend_delete", args=[backend.pk]),
        reverse("admin:tenants_auditevent_change", args=[event.pk]),
        reverse("admin:luascripts_scriptversion_script", args=[t.pk]),
        reverse("admin:luascripts_scriptversion_version", args=[t.pk, version]),
        reverse("admin:luascripts_scriptversion_diff", args=[t.pk]),
        reverse("admin:luascripts_scriptversion_activate", args=[t.pk, version]),
        reverse("admin:luascripts_scriptversion_deactivate", args=[t.pk]),
        reverse("admin:luascripts_scriptversion_try", args=[t.pk]),
    ]


PAGE_IDS = ["tenant", "tenant-popup", "history", "backend", "backend-popup", "backend-delete",
            "audit-event", "script", "version", "diff", "activate", "deactivate", "try"]


@pytest.mark.django_db
@pytest.mark.parametrize("page", range(len(PAGE_IDS)), ids=PAGE_IDS)
def test_an_operator_gets_404_for_another_tenants_admin_pages(tenants, op_client, page):
    acme, globex = tenants
    own = op_client.get(admin_pages(acme)[page])
    # 403: this operator may not delete backends; 302: the console only takes POSTs
    assert own.status_code in (200, 302, 403), own.status_code
    assert op_client.get(admin_pages(globex)[page]).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("name,args,data", [
    ("luascripts_scriptversion_activate", (1,), {}),
    ("luascripts_scriptversion_deactivate", (), {}),
    ("luascripts_scriptversion_script", (), {"source": GOOD2, "message": "sneaky"}),
    ("tenants_tenant_change", (), {"slug": "globex", "name": "Owned", "path_prefix": "/g"}),
    ("tenants_tenant_delete", (), {"post": "yes"}),
])
def test_an_operators_writes_to_another_tenant_are_404_and_change_nothing(
        tenants, op_client, name, args, data):
    acme, globex = tenants
    before = world()
    response = op_client.post(reverse(f"admin:{name}", args=[globex.pk, *args]), data)
    assert response.status_code == 404
    assert world() == before


@pytest.mark.django_db
def test_an_operators_popups_and_lookups_show_nothing_of_another_tenant(tenants, op_client):
    acme, globex = tenants
    lookups = [
        (reverse("admin:tenants_tenant_changelist"), {"_popup": "1", "_to_field": "id"}),
        (reverse("admin:tenants_backend_changelist"), {"_popup": "1",
                                                        "tenant__id__exact": globex.pk}),
        (reverse("admin:tenants_backend_add"), {"_popup": "1", "tenant": globex.pk}),
        (reverse("admin:luascripts_scriptversion_changelist"), {"tenant__id__exact": globex.pk}),
        (reverse("admin:tenants_auditevent_changelist"), {"q": "globex"}),
        (reverse("admin:autocomplete"), {"app_label": "tenants", "model_name": "backend",
                                         "field_name": "tenant", "term": "glo"}),
    ]
    for url, query in lookups:
        response = op_client.get(url, query)
        assert response.status_code == 200, url
        assert b"secret-backend" not in response.content, url
        shown = response.content.replace(b'value="globex"', b"").replace(b"q=globex", b"")
        assert not re.search(rb"[Gg]lobex", shown), url  # only the echo of the search box


# -- CSRF on session writes ----------------------------------------------------------------

@pytest.fixture
def strict_session(superuser):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["tenant-change", "publish", "activate", "deactivate",
                                    "operator-logout"])
def test_admin_session_writes_without_a_csrf_token_are_403(tenants, strict_session, target):
    acme, _ = tenants
    url, data = {
        "tenant-change": (reverse("admin:tenants_tenant_change", args=[acme.pk]),
                          {"slug": "acme", "name": "Owned", "domains": "acme.example.com"}),
        "publish": (reverse("admin:luascripts_scriptversion_script", args=[acme.pk]),
                    {"source": GOOD2}),
        "activate": (reverse("admin:luascripts_scriptversion_activate", args=[acme.pk, 1]), {}),
        "deactivate": (reverse("admin:luascripts_scriptversion_deactivate", args=[acme.pk]),
                       {}),
        "operator-logout": (reverse("admin:logout"), {}),
    }[target]
    before = world()
    response = strict_session.post(url, data)
    assert response.status_code == 403 and b"CSRF" in response.content
    assert world() == before


@pytest.mark.django_db
def test_api_session_writes_need_the_csrf_token(tenants, superuser):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(superuser)
    before = world()
    refused = error_of(call(client, "POST", "tenants/acme/scripts/", {"source": GOOD2}), 403,
                       "permission_denied")
    assert "CSRF" in refused["detail"]
    assert world() == before
    client.get("/admin/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    allowed = client.post("/api/v1/tenants/acme/scripts/", {"source": GOOD2}, format="json",
                          HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 201
    assert AuditEvent.objects.filter(action="script.publish", actor="root").exists()


# -- login brute force ---------------------------------------------------------------------

def login(client, password: str, **extra):
    return client.post(reverse("admin:login"), {"username": "root", "password": password,
                                                "next": "/admin/"}, **extra)


@pytest.mark.django_db
@override_settings(AXES_ENABLED=True, AXES_FAILURE_LIMIT=3)
def test_login_brute_force_is_throttled_per_client_and_recorded(superuser):
    from axes.models import AccessAttempt

    attacker = Client(REMOTE_ADDR="203.0.113.66")
    statuses = [login(attacker, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
                for n in range(4)]
    assert statuses == [200, 200, 429, 429]  # a fresh X-Forwarded-For per guess changes nothing
    locked = login(attacker, "pw-root-123")
    assert locked.status_code == 429 and "_auth_user_id" not in attacker.session
    attempt = AccessAttempt.objects.get(ip_address="203.0.113.66")
    assert attempt.failures_since_start >= 3 and attempt.username == "root"
    colleague = Client(REMOTE_ADDR="198.51.100.7")
    assert login(colleague, "pw-root-123").status_code == 302


# -- through the real server ---------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.usefixtures("same_worker")
def test_the_planes_stay_apart(live):
    before = len(live.farm.echo.seen)
    with live.client() as data:
        for path in ("/admin/", "/admin/login/", "/api/v1/tenants/", "/api/v1/schema/"):
            for host in ("localhost", "127.0.0.1"):
                response = data.get(path, headers={"Host": host})
                assert response.status_code == 404 and response.json()["error"] == "no_tenant"
    with httpx.Client(base_url=live.control, trust_env=False, timeout=10) as control:
        response = control.get("/raw/x", headers={"Host": "adv.test"})
        assert response.status_code == 400  # not an allowed control-plane host
        response = control.get("/api/v1/tenants/", headers={"Host": "localhost"})
        assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    assert len(live.farm.echo.seen) == before


@pytest.mark.e2e
@pytest.mark.usefixtures("same_worker")
def test_login_brute_force_through_the_real_server_is_429(live):
    """The address counted is daphne's TCP peer; X-Forwarded-For from it is not believed."""
    live.manage("shell", "-c", (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        "U.objects.filter(username='bruted').exists() or "
        "U.objects.create_superuser('bruted', 'b@example.com', 'the-right-pw-42')"))
    with httpx.Client(base_url=live.control, trust_env=False, timeout=10,
                      headers={"Host": "localhost"}) as control:
        page = control.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

        def attempt(password: str, n: int) -> int:
            return control.post("/admin/login/", data={
                "csrfmiddlewaretoken": token, "username": "bruted", "password": password,
                "next": "/admin/"}, headers={"X-Forwarded-For": f"10.9.9.{n}",
                                             "Referer": f"{live.control}/admin/login/"}
            ).status_code

        assert [attempt(f"guess-{n}", n) for n in range(4)] == [200, 200, 429, 429]
        assert attempt("the-right-pw-42", 9) == 429
        assert "sessionid" not in control.cookies
