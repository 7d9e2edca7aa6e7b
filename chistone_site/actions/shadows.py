"""Shadows: a stored version decides, without effects, beside the active one.

For a sample of a tenant's live requests (`sample_rate`), after the client has its answer,
the data plane (routing.shadow) runs both the active version and the shadow on the same
request with stub effects that answer nothing (no upstream call, no http.request, nothing
written anywhere) and compares their decisions: kind, backend, upstream path and query,
status. Every worker writes what it compared about once a second: per route of the active
version, requests compared and mismatched, and the first MAX_SAMPLES mismatches (request
id and both decisions). The client's answer and latency never depend on it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from luascripts import services as script_services
from luascripts.models import ScriptVersion, Shadow
from routing.observations import MAX_SAMPLES  # mismatches kept per shadow
from tenants.audit import Actor, record
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.events import config_changed
from tenants.models import Tenant


def check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise InvalidInput("sample_rate is the share of requests shadowed: more than 0, at "
                           "most 1 (0.1 = one request in ten).")
    return float(rate)


def running_shadow(tenant: Tenant) -> Shadow | None:
    return (Shadow.objects.filter(tenant=tenant, state=Shadow.RUNNING)
            .select_related("version").first())


def latest_shadow(tenant: Tenant) -> Shadow | None:
    return (Shadow.objects.filter(tenant=tenant).select_related("version")
            .order_by("-started_at", "-id").first())


def do_start_shadow(*, actor: Actor, tenant: Tenant, version: int | ScriptVersion,
                    sample_rate: float = 0.1) -> Shadow:
    """Start `version` as the tenant's shadow (a running one is stopped first)."""
    rate = check_rate(sample_rate)
    if not isinstance(version, ScriptVersion):
        version = script_services.get_version(tenant=tenant, number=version)
    script_services.check_activatable(tenant=tenant, version=version)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if locked.active_version_id is None:
            raise Conflict(f"Tenant {tenant.slug!r} has no active version to compare a "
                           "shadow with.")
        if locked.active_version_id == version.pk:
            raise Conflict(f"v{version.number} is the active version: a shadow runs another "
                           "version beside it.")
        _stop(actor=actor, tenant=locked)
        shadow = Shadow.objects.create(tenant=locked, version=version, sample_rate=rate,
                                       started_by=actor.name[:200])
        record(actor=actor, action="script.shadow_start", obj=shadow, tenant=locked,
               detail={"version": version.number, "sample_rate": rate,
                       "active": locked.active_version.number})
        config_changed([locked.slug])
    return shadow


def _stop(*, actor: Actor, tenant: Tenant) -> Shadow | None:
    shadow = (Shadow.objects.select_for_update(of=("self",))
              .filter(tenant=tenant, state=Shadow.RUNNING).select_related("version").first())
    if shadow is None:
        return None
    shadow.state = Shadow.STOPPED
    shadow.stopped_at = timezone.now()
    shadow.save(update_fields=["state", "stopped_at"])
    record(actor=actor, action="script.shadow_stop", obj=shadow, tenant=tenant,
           detail={"version": shadow.version.number})
    return shadow


def stop_shadow_of(*, actor: Actor, tenant: Tenant, version: ScriptVersion) -> None:
    """Inside an activation's transaction: a shadow of the version now active has nothing
    left to compare with, so it stops."""
    running = running_shadow(tenant)
    if running is not None and running.version_id == version.pk:
        _stop(actor=actor, tenant=tenant)


def do_stop_shadow(*, actor: Actor, tenant: Tenant) -> Shadow:
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        shadow = _stop(actor=actor, tenant=locked)
        if shadow is None:
            raise NotFound(f"Tenant {tenant.slug!r} has no shadow running.")
        config_changed([locked.slug])
    return shadow


def shadow_report(shadow: Shadow | None) -> dict[str, Any] | None:
    """A shadow for the API, the admin and the CLI: per route compared and mismatched,
    the kept mismatches."""
    if shadow is None:
        return None
    routes = [{"route": r.route, "compared": r.compared, "mismatched": r.mismatched}
              for r in shadow.routes.order_by("-mismatched", "route")]
    samples = [{"request_id": s.request_id, "route": s.route, "method": s.method,
                "path": s.path, "active": s.active, "shadow": s.candidate,
                "seen_at": s.seen_at.isoformat()}
               for s in shadow.samples.order_by("id")]
    return {
        "id": shadow.pk,
        "version": shadow.version.number,
        "sample_rate": shadow.sample_rate,
        "state": shadow.state,
        "started_by": shadow.started_by,
        "started_at": shadow.started_at.isoformat(),
        "stopped_at": shadow.stopped_at.isoformat() if shadow.stopped_at else None,
        "compared": sum(r["compared"] for r in routes),
        "mismatched": sum(r["mismatched"] for r in routes),
        "dropped": shadow.dropped,
        "routes": routes,
        "samples": samples,
        "max_samples": MAX_SAMPLES,
    }
