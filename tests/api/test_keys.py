"""API keys: the create_api_key command, the admin (secret shown once), revocation."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from chistone_site.api.models import ApiKey
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_key_alone_on_its_last_line(acme, globex, client_for):
    out, err = run("--name", "ci", "--tenant", "acme", "--scope", "read,write",
                   "--expires", "30")
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("chs_") and " " not in raw
    key = ApiKey.objects.get(name="ci")
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert key.scopes == ["read", "write"] and not key.all_tenants
    assert list(key.tenants.values_list("slug", flat=True)) == ["acme"]
    assert key.expires_at is not None and "shown only once" in err
    client = client_for(raw)
    assert [t["slug"] for t in client.get("/api/v1/tenants/").json()] == ["acme"]
    assert AuditEvent.objects.filter(action="apikey.create", object_repr__startswith="ci").exists()


def test_command_defaults_to_an_all_tenants_read_key(acme):
    out, _ = run("--name", "reader")
    key = ApiKey.objects.get(name="reader")
    assert key.all_tenants and key.scopes == ["read"] and key.expires_at is None


@pytest.mark.parametrize("args, message", [
    (("--name", "x", "--tenant", "nobody"), "No such tenant"),
    (("--name", "x", "--scope", "read,admin"), "Unknown scope"),
    (("--name", "x", "--expires", "0"), "positive"),
])
def test_command_errors(acme, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ApiKey.objects.exists()


def test_an_unrevoked_name_is_unique(acme):
    run("--name", "dup")
    with pytest.raises(CommandError, match="already exists"):
        run("--name", "dup")


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_admin_creates_a_key_and_shows_it_once(acme, admin_client, client_for):
    response = admin_client.post("/admin/api/apikey/add/", {
        "name": "from-admin", "scopes": ["read", "activate"], "tenants": [acme.pk]})
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(name="from-admin")
    html = response.content.decode()
    start = html.index("chs_" + key.prefix)
    raw = html[start:html.index("<", start)]
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert key.created_by.username == "root"
    assert client_for(raw).get("/api/v1/tenants/acme/").status_code == 200
    detail = admin_client.get(f"/admin/api/apikey/{key.pk}/change/").content.decode()
    assert key.prefix in detail and raw not in detail
    assert raw not in admin_client.get("/admin/api/apikey/").content.decode()


def test_admin_form_errors_are_shown(acme, admin_client):
    response = admin_client.post("/admin/api/apikey/add/", {"name": "nobody", "scopes": ["read"]})
    assert response.status_code == 200
    assert "Give the tenants" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_revokes(acme, admin_client, make_key, client_for):
    raw = make_key(name="to-revoke")
    key = ApiKey.objects.get(name="to-revoke")
    response = admin_client.post("/admin/api/apikey/", {
        "action": "revoke_keys", "_selected_action": [key.pk]})
    # First a confirmation: revoking cannot be undone.
    assert response.status_code == 200
    assert "This cannot be undone" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None
    assert client_for(raw).get("/api/v1/tenants/").status_code == 200
    response = admin_client.post("/admin/api/apikey/", {
        "action": "revoke_keys", "_selected_action": [key.pk], "post": "yes"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client_for(raw).get("/api/v1/tenants/").status_code == 401
    assert AuditEvent.objects.filter(action="apikey.revoke", actor="root").exists()
