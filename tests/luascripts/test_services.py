import pytest
from django.db import transaction

from luascripts import services
from luascripts.models import ScriptVersion
from tenants import services as tenant_services
from tenants.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from tenants.models import AuditEvent, ConfigState

pytestmark = pytest.mark.django_db

GOOD = 'chi.get("/hello", function(req) return respond(200, "hi") end)\n'
GOOD2 = 'chi.get("/hello", function(req) return respond(200, "hello") end)\n'
BAD = 'chi.get("/hello", function(req)\n  return respond(200, "hi"\nend)\n'


@pytest.fixture
def acme(tenant_factory):
    return tenant_factory("acme")


def test_publish_numbers_versions_and_audits(actor, acme):
    v1, created1 = services.publish_version(actor=actor, tenant=acme, source=GOOD, message="one")
    v2, created2 = services.publish_version(actor=actor, tenant=acme, source=GOOD2)
    assert (v1.number, v2.number, created1, created2) == (1, 2, True, True)
    assert v1.valid and v1.sha256 == services.source_sha256(GOOD) and v1.author == "tester"
    assert v1.routes == [{"method": "GET", "pattern": "/hello", "middleware": 0, "target": "",
                          "labels": []}]
    assert AuditEvent.objects.filter(action="script.publish").count() == 2


def test_publishing_the_same_source_is_idempotent(actor, acme):
    v1, _ = services.publish_version(actor=actor, tenant=acme, source=GOOD)
    again, created = services.publish_version(actor=actor, tenant=acme, source=GOOD,
                                              message="retry")
    assert (again.pk, created) == (v1.pk, False)
    assert ScriptVersion.objects.count() == 1
    assert AuditEvent.objects.filter(action="script.publish").count() == 1


def test_an_invalid_source_is_kept_as_a_draft_with_line_numbers(actor, acme):
    draft, created = services.publish_version(actor=actor, tenant=acme, source=BAD)
    assert created and not draft.valid and draft.status == "draft"
    assert draft.errors and draft.errors[0]["line"] in (2, 3)
    with pytest.raises(Conflict, match="draft with errors"):
        services.activate_version(actor=actor, tenant=acme, version=draft)
    acme.refresh_from_db()
    assert acme.active_version is None


def test_source_checks(actor, acme):
    with pytest.raises(PayloadTooLarge, match="limit is 262144 bytes"):
        services.publish_version(actor=actor, tenant=acme, source="--" + "x" * 300_000)
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        services.publish_version(actor=actor, tenant=acme, source=b"\xff\xfe")
    assert not ScriptVersion.objects.exists()


def test_activate_and_roll_back_move_the_pointer_and_audit(actor, acme):
    v1, _ = services.publish_version(actor=actor, tenant=acme, source=GOOD)
    v2, _ = services.publish_version(actor=actor, tenant=acme, source=GOOD2)
    gen = ConfigState.objects.get(pk=1).generation
    services.activate_version(actor=actor, tenant=acme, version=v2)
    services.activate_version(actor=actor, tenant=acme, version=v1)
    acme.refresh_from_db()
    assert acme.active_version == v1
    actions = list(AuditEvent.objects.filter(action__startswith="script.").exclude(
        action="script.publish").values_list("action", "detail"))
    assert actions == [("script.rollback", {"version": 1, "previous": 2}),
                       ("script.activate", {"version": 2, "previous": None})]
    assert ConfigState.objects.get(pk=1).generation == gen + 2


def test_activation_of_another_tenants_version_is_not_found(actor, acme, tenant_factory):
    globex = tenant_factory("globex")
    theirs, _ = services.publish_version(actor=actor, tenant=globex, source=GOOD)
    with pytest.raises(NotFound):
        services.activate_version(actor=actor, tenant=acme, version=theirs)
    with pytest.raises(NotFound):
        services.get_version(tenant=acme, number=theirs.number)


def test_failed_activation_rolls_back_the_audit_row(actor, acme):
    v1, _ = services.publish_version(actor=actor, tenant=acme, source=GOOD)
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.activate_version(actor=actor, tenant=acme, version=v1)
        raise RuntimeError("boom")
    acme.refresh_from_db()
    assert acme.active_version is None
    assert AuditEvent.objects.count() == before


def test_mount_targets_are_checked_against_the_tenants_backends(actor, acme):
    source = 'chi.mount("/legacy", "legacy")\n'
    draft, _ = services.publish_version(actor=actor, tenant=acme, source=source)
    assert not draft.valid and "legacy" in draft.errors[0]["message"]
    tenant_services.create_backend(actor=actor, tenant=acme, name="legacy", url="http://h:1")
    ok, _ = services.publish_version(actor=actor, tenant=acme, source=source + "-- now valid\n")
    assert ok.valid


def test_deleting_a_tenant_with_an_active_version(actor, acme):
    v1, _ = services.publish_version(actor=actor, tenant=acme, source=GOOD)
    services.activate_version(actor=actor, tenant=acme, version=v1)
    tenant_services.delete_tenant(actor=actor, tenant=acme)
    assert not ScriptVersion.objects.exists()
