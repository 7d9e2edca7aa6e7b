import pytest
from django.db import IntegrityError, transaction

from luascripts.models import ImmutableVersionError, ScriptVersion
from tenants.models import HostClaim

pytestmark = pytest.mark.django_db


def make_version(tenant, number=1, source="-- v"):
    return ScriptVersion.objects.create(tenant=tenant, number=number, source=source,
                                        sha256="0" * 64, author="t", valid=True)


def test_a_stored_version_cannot_be_saved_again(tenant_factory):
    version = make_version(tenant_factory("acme"))
    version.source = "changed"
    with pytest.raises(ImmutableVersionError, match="immutable"):
        version.save()
    version.refresh_from_db()
    assert version.source == "-- v"


def test_a_stored_version_cannot_be_bulk_updated(tenant_factory):
    make_version(tenant_factory("acme"))
    with pytest.raises(ImmutableVersionError):
        ScriptVersion.objects.update(source="changed")
    assert ScriptVersion.objects.get().source == "-- v"


def test_version_numbers_are_unique_per_tenant(tenant_factory):
    acme, globex = tenant_factory("acme"), tenant_factory("globex")
    make_version(acme, 1)
    make_version(globex, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_version(acme, 1)


def test_host_claims_are_unique_in_the_database_itself(tenant_factory):
    acme, globex = tenant_factory("acme"), tenant_factory("globex")
    HostClaim.objects.create(tenant=acme, host="x.example.com", path_prefix="/p")
    with pytest.raises(IntegrityError), transaction.atomic():
        HostClaim.objects.create(tenant=globex, host="x.example.com", path_prefix="/p")


def test_a_tenant_has_one_active_pointer(tenant_factory):
    acme = tenant_factory("acme")
    v1, v2 = make_version(acme, 1), make_version(acme, 2, "-- v2")
    acme.active_version = v1
    acme.save()
    assert v1.status == "active" and v2.status == "valid"
    acme.active_version = v2
    acme.save()
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.status == "valid" and v2.status == "active"
