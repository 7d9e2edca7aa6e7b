"""Building the snapshot from the database (Lua loader stubbed; e2e runs the real one)."""

import pytest

from luascripts.models import ScriptFault, ScriptVersion
from routing.snapshot import SnapshotHolder, build_snapshot
from tenants import services
from tenants.audit import Actor


class Loaded:
    def __init__(self, source, tenant, names):
        self.source, self.tenant, self.names = source, tenant, names
        self.is_selector = "on_route_request" in source


class Loader:
    def __init__(self):
        self.calls = 0

    def __call__(self, source, *, tenant, backend_names=None, limits=None):
        self.calls += 1
        if "syntax error" in source:
            raise ValueError("line 1: syntax error")
        return Loaded(source, tenant, backend_names)


def _version(tenant, number, source):
    import hashlib

    return ScriptVersion.objects.create(
        tenant=tenant, number=number, source=source, author="t", valid=True,
        sha256=hashlib.sha256(source.encode()).hexdigest())


def _activate(tenant, version):
    from tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(active_version=version)


@pytest.fixture
def actor():
    return Actor.system()


@pytest.mark.django_db
def test_build_reads_tenants_backends_and_scripts(tenant_factory, actor):
    acme = tenant_factory("acme", domains=["acme.example.com"], path_prefix="/api")
    services.create_backend(actor=actor, tenant=acme, name="users", url="http://127.0.0.1:9001/b",
                            weight=3, read_timeout_ms=1500)
    services.create_backend(actor=actor, tenant=acme, name="old", url="https://old.internal",
                            enabled=False)
    tenant_factory("off", domains=["off.example.com"], active=False)
    _activate(acme, _version(acme, 1, "chi.get('/', h)"))
    loader = Loader()
    snap = build_snapshot(loader=loader)
    assert set(snap.tenants) == {"acme"}
    entry = snap.tenants["acme"]
    assert entry.script.names == ["old", "users"] and entry.version_number == 1
    users = entry.backends["users"]
    assert (users.origin, users.base_path, users.host_header) == (
        "http://127.0.0.1:9001", "/b", "127.0.0.1:9001")
    assert users.read_timeout_s == 1.5 and users.weight == 3
    assert entry.backends["old"].origin == "https://old.internal:443"
    assert entry.backends["old"].host_header == "old.internal"
    assert [b.name for b in entry.default_pool] == ["users"]
    assert snap.resolver.resolve("acme.example.com", "/api/x").tenant is entry
    assert snap.resolver.resolve("off.example.com", "/") is None
    assert snap.generation >= 1


@pytest.mark.django_db
def test_unchanged_scripts_are_reused_changed_ones_reloaded(tenant_factory, actor):
    acme = tenant_factory("acme")
    other = tenant_factory("other")
    _activate(acme, _version(acme, 1, "chi.get('/', a)"))
    _activate(other, _version(other, 1, "chi.get('/', b)"))
    loader = Loader()
    first = build_snapshot(loader=loader)
    assert loader.calls == 2
    _activate(acme, _version(acme, 2, "chi.get('/', a2)"))
    second = build_snapshot(first, loader=loader)
    assert loader.calls == 3
    assert second.tenants["other"].script is first.tenants["other"].script
    assert second.tenants["acme"].script is not first.tenants["acme"].script
    # a new backend name changes what the script may refer to: reloaded
    services.create_backend(actor=actor, tenant=other, name="x", url="http://127.0.0.1:1")
    third = build_snapshot(second, loader=loader)
    assert loader.calls == 4
    assert third.tenants["acme"].script is second.tenants["acme"].script


@pytest.mark.django_db
def test_faulty_or_unloadable_scripts_make_the_tenant_unavailable(tenant_factory):
    acme = tenant_factory("acme")
    broken = tenant_factory("broken")
    version = _version(acme, 1, "chi.get('/', a)")
    _activate(acme, version)
    ScriptFault.objects.create(version=version, reason="blocked worker 7")
    _activate(broken, _version(broken, 1, "syntax error"))
    snap = build_snapshot(loader=Loader())
    assert "version 1" in snap.tenants["acme"].unavailable
    assert snap.tenants["acme"].script is None
    assert "could not be loaded" in snap.tenants["broken"].unavailable


@pytest.mark.django_db(transaction=True)
def test_holder_rebuilds_after_commit_and_never_goes_back(tenant_factory, monkeypatch):
    from tenants import events

    holder = SnapshotHolder()
    monkeypatch.setattr("routing.snapshot._default_loader", lambda: Loader())
    holder.rebuild()
    first = holder.current
    events.add_listener(holder.on_config_change)
    try:
        tenant_factory("fresh")
    finally:
        events.remove_listener(holder.on_config_change)
    assert "fresh" in holder.current.tenants
    assert holder.current.generation > first.generation
    assert holder.swap(first) is False  # an older generation never replaces a newer one
    assert "fresh" in holder.current.tenants
