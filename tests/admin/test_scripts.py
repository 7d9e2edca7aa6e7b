"""The script page: publish (never edit) versions, drafts with errors at their lines, history."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from luascripts.models import ScriptVersion
from tenants.models import AuditEvent

from .conftest import BAD, GOOD, GOOD2

pytestmark = pytest.mark.django_db


def url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


def test_empty_script_page_offers_a_starter_script(op_client, acme):
    response = op_client.get(url("script", acme))
    assert response.status_code == 200
    content = response.content.decode()
    assert "No active script" in content
    assert "chi.get(&quot;/&quot;" in content  # the starter script in the editor's textarea
    # The editor is django-ace with Lua mode, from our own static files.
    assert 'data-mode="lua"' in content
    assert "/static/django_ace/ace/ace.js" in content
    assert "/static/django_ace/ace/mode-lua.js" in content
    assert "//cdn" not in content and "https://" not in content.split("<body")[0]


def test_saving_publishes_a_new_version_and_never_edits_one(op_client, acme, operator):
    response = op_client.post(url("script", acme), {"source": GOOD, "message": "first"})
    assert response.status_code == 302
    assert response["Location"].endswith("?from=1")
    v1 = ScriptVersion.objects.get(tenant=acme, number=1)
    assert (v1.valid, v1.author, v1.message, v1.source) == (True, "olga", "first", GOOD)
    op_client.post(url("script", acme), {"source": GOOD2, "message": "second"})
    v1_again = ScriptVersion.objects.get(pk=v1.pk)
    assert v1_again.source == GOOD and v1_again.sha256 == v1.sha256
    assert list(acme.versions.order_by("number").values_list("number", flat=True)) == [1, 2]
    acme.refresh_from_db()
    assert acme.active_version_id is None  # saving never activates
    assert AuditEvent.objects.filter(action="script.publish", tenant_slug="acme").count() == 2
    page = op_client.get(response["Location"])
    assert "Saved v1" in page.content.decode()


def test_an_invalid_script_is_kept_as_a_draft_with_its_errors_at_their_lines(op_client, acme):
    response = op_client.post(url("script", acme), {"source": BAD, "message": "oops"},
                              follow=True)
    draft = ScriptVersion.objects.get(tenant=acme)
    assert not draft.valid and draft.errors
    line = draft.errors[0]["line"]
    assert line == 3  # the engine locates the unclosed call where Lua notices it
    content = response.content.decode()
    assert "Saved as draft v1" in content
    # The error list names the line, and the quoted source marks that line.
    assert re.search(rf'<a href="#L{line}">Line {line}</a>', content)
    assert re.search(rf'<tr id="L{line}" class="has-error">', content)
    assert draft.errors[0]["message"].split(" near ")[0][:20] in content
    # The editor holds the draft so the operator can fix it; the errors are there for ace too.
    assert response.context["form"]["source"].value() == BAD
    assert 'id="chistone-editor-errors"' in content
    # A draft can never be activated: no activate link for it.
    assert url("activate", acme, 1) not in content


def test_fixing_a_draft_publishes_a_valid_version(op_client, acme):
    op_client.post(url("script", acme), {"source": BAD})
    response = op_client.post(url("script", acme), {"source": GOOD, "message": "fixed"},
                              follow=True)
    assert [(v.number, v.valid) for v in acme.versions.order_by("number")] == [
        (1, False), (2, True)]
    content = response.content.decode()
    assert "validation-errors" not in content
    assert url("activate", acme, 2) in content


def test_saving_the_same_source_again_stores_nothing(op_client, acme):
    op_client.post(url("script", acme), {"source": GOOD})
    response = op_client.post(url("script", acme), {"source": GOOD, "message": "again"},
                              follow=True)
    assert acme.versions.count() == 1
    assert "identical to v1" in response.content.decode()


def test_an_empty_or_oversized_script_is_a_form_error(op_client, acme):
    response = op_client.post(url("script", acme), {"source": ""})
    assert response.status_code == 200
    assert response.context["form"].errors["source"] == ["The script is empty."]
    huge = "-- " + "x" * (300 * 1024) + "\n"
    response = op_client.post(url("script", acme), {"source": huge})
    assert response.status_code == 200
    assert "limit is" in " ".join(response.context["form"].errors["source"])
    assert not acme.versions.exists()


def test_history_lists_author_time_message_sha_and_status(op_client, acme, publish, activate):
    v1 = publish(acme, GOOD, message="first")
    v2 = publish(acme, GOOD2, message="second")
    publish(acme, BAD, message="broken")
    activate(acme, v1)
    response = op_client.get(url("script", acme))
    content = response.content.decode()
    history = content[content.index('id="history"'):]
    for version, status in ((v1, "active"), (v2, "valid")):
        row = history[history.index(f'id="history-v{version.number}"'):]
        row = row[:row.index("</tr>", row.index("</tr>") + 1)]
        assert f'chistone-status {status}' in row
        assert version.sha256[:12] in row and version.message in row and "fixture" in row
    assert "chistone-status draft" in history
    # v2 is newer than the active v1: "activate"; nothing to roll back to yet.
    assert url("activate", acme, 2) in history and "roll back" not in history


def test_the_editor_loads_any_version_on_request(op_client, acme, publish):
    publish(acme, GOOD)
    publish(acme, GOOD2)
    response = op_client.get(url("script", acme), {"from": 1})
    assert response.context["form"]["source"].value() == GOOD
    assert op_client.get(url("script", acme), {"from": 9}).status_code == 404


def test_version_page_shows_source_routes_and_metadata(op_client, acme, publish):
    version = publish(acme, GOOD2, message="two routes")
    response = op_client.get(url("version", acme, 1))
    content = response.content.decode()
    assert version.sha256 in content and "two routes" in content
    assert 'id="route-table"' in content and "/users/{id}" in content
    assert '<tr id="L2">' in content
    assert op_client.get(url("version", acme, 2)).status_code == 404


def test_reading_without_publish_permission(op_client, operator, acme, publish):
    publish(acme, GOOD)
    operator.user_permissions.remove(
        Permission.objects.get(codename="add_scriptversion"))
    response = op_client.get(url("script", acme))
    assert response.status_code == 200
    assert 'id="publish-form"' not in response.content.decode()
    assert op_client.post(url("script", acme), {"source": GOOD2}).status_code == 403
    assert acme.versions.count() == 1


def test_without_view_permission_the_script_page_is_forbidden(op_client, operator, acme):
    operator.user_permissions.remove(
        Permission.objects.get(codename="view_scriptversion"),
        Permission.objects.get(codename="add_scriptversion"))
    assert op_client.get(url("script", acme)).status_code == 403


def test_the_version_changelist_links_to_script_pages(op_client, acme, publish):
    publish(acme, GOOD)
    response = op_client.get(reverse("admin:luascripts_scriptversion_changelist"))
    content = response.content.decode()
    assert url("version", acme, 1) in content and url("script", acme) in content
    version = acme.versions.get()
    change = op_client.get(reverse("admin:luascripts_scriptversion_change", args=[version.pk]))
    assert change.status_code == 302 and change["Location"] == url("version", acme, 1)
    assert op_client.get(reverse("admin:luascripts_scriptversion_add")).status_code == 403
