"""Rollouts: a version answers a share of a tenant's traffic, sticky per client.

Started by activating a version with `percent` below 100 (scripts.do_activate_version),
raised or lowered with do_set_rollout_percent (100 completes it: the version becomes the
active one, after its stored tests pass again), ended with do_end_rollout (rolling back: the
previous version keeps all the traffic). The data plane (routing.rollout) sends a request to
the new version when a stable hash of its key (the client's IP, or a header's value) falls
below the percentage: every worker on every node decides alike, the same key always gets
the same version, and raising the percentage only moves clients onto the new version.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from chistone_site.actions.guard import Guard, guard_figures, guard_of
from luascripts import services as script_services
from luascripts.models import Rollout, ScriptVersion
from tenants.audit import Actor, record
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.events import config_changed
from tenants.models import Tenant

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def check_percent(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise InvalidInput("percent is a whole number from 1 to 100 (100 activates fully).")
    return percent


def check_key_header(name: Any) -> str:
    if name in (None, ""):
        return ""
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise InvalidInput(f"key_header {name!r} is not a header name.")
    if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
        raise InvalidInput(f"key_header {name!r} cannot tell clients apart; use a header "
                           "that does (a user or session id), or leave it empty for the "
                           "client's IP.")
    return name.lower()


def running_rollout(tenant: Tenant, *, lock: bool = False) -> Rollout | None:
    rows = Rollout.objects.filter(tenant=tenant, state=Rollout.RUNNING)
    if lock:
        rows = rows.select_for_update(of=("self",))
    return rows.select_related("version", "previous").first()


def start_rollout(*, actor: Actor, tenant: Tenant, version: ScriptVersion, percent: int,
                  key_header: str = "", guard: Guard | None = None) -> Rollout:
    """Inside the caller's transaction, with `tenant` locked: start a rollout of `version`
    (percent < 100), or a guarded full activation (percent 100 with a guard)."""
    previous = tenant.active_version
    if percent < 100 and previous is None:
        raise Conflict(f"Tenant {tenant.slug!r} has no active version to share the traffic "
                       f"with: activate v{version.number} fully instead.")
    if guard is not None and previous is None:
        raise Conflict(f"Tenant {tenant.slug!r} has no active version: a guard compares the "
                       "new version with the previous one. Activate without a guard.")
    if previous is not None and previous.pk == version.pk:
        raise Conflict(f"v{version.number} is already the active version.")
    current = running_rollout(tenant, lock=True)
    if current is not None:
        raise Conflict(
            f"v{current.version.number} is being rolled out to {current.percent}% of "
            f"{tenant.slug!r}; change its percentage, complete it (100) or roll it back first.",
            detail={"rollout": current.pk})
    rollout = Rollout.objects.create(
        tenant=tenant, version=version, previous=previous, percent=percent,
        key_header=key_header, started_by=actor.name[:200],
        max_error_rate=guard.max_error_rate if guard else None,
        min_requests=guard.min_requests if guard else None,
        window_s=guard.window_s if guard else None)
    record(actor=actor, action="script.rollout_start", obj=rollout, tenant=tenant,
           detail={"version": version.number,
                   "previous": previous.number if previous else None,
                   "percent": percent, "key": key_header or "client_ip",
                   "guard": guard.to_dict() if guard else None})
    config_changed([tenant.slug])
    return rollout


def do_set_rollout_percent(*, actor: Actor, tenant: Tenant, percent: int,
                           override: Any = None) -> Rollout:
    """Change the running rollout's share; 100 completes it (the version becomes active,
    once its stored tests pass against the current configuration)."""
    percent = check_percent(percent)
    rollout = running_rollout(tenant)
    if rollout is None:
        raise NotFound(f"Tenant {tenant.slug!r} has no rollout running.")
    if percent == 100:
        from chistone_site.actions.scripts import do_activate_version

        do_activate_version(actor=actor, tenant=tenant, version=rollout.version,
                            override=override)
        rollout.refresh_from_db()
        return rollout
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        rollout = running_rollout(tenant, lock=True)
        if rollout is None:
            raise NotFound(f"Tenant {tenant.slug!r} has no rollout running.")
        if rollout.percent == 100:
            raise Conflict("A guarded full activation has no share to change; roll it back "
                           "or let its guard complete it.")
        before = rollout.percent
        if before != percent:
            rollout.percent = percent
            rollout.save(update_fields=["percent", "updated_at"])
            record(actor=actor, action="script.rollout_percent", obj=rollout, tenant=tenant,
                   detail={"version": rollout.version.number, "from": before, "to": percent})
            config_changed([tenant.slug])
    return rollout


def finish_rollout(*, actor: Actor, tenant: Tenant, activated: ScriptVersion) -> None:
    """Inside an activation's transaction: the running rollout ends. Completed when the
    activated version is the rollout's; superseded (rolled back) otherwise."""
    rollout = running_rollout(tenant, lock=True)
    if rollout is None:
        return
    completed = rollout.version_id == activated.pk
    script_services.end_rollout(
        rollout, state=Rollout.COMPLETED if completed else Rollout.ROLLED_BACK, by=actor.name,
        outcome={"reason": "completed" if completed
                 else f"v{activated.number} was activated instead"})
    record(actor=actor, action="script.rollout_complete" if completed
           else "script.rollout_rollback", obj=rollout, tenant=tenant,
           detail={"version": rollout.version.number, "percent": rollout.percent,
                   "activated": activated.number})


def do_end_rollout(*, actor: Actor, tenant: Tenant) -> Rollout:
    """Roll the running rollout back: the previous version answers every request again
    (after a guarded full activation it becomes the active version again). No tests run:
    it is what served before the rollout started."""
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        rollout = running_rollout(locked, lock=True)
        if rollout is None:
            raise NotFound(f"Tenant {tenant.slug!r} has no rollout running.")
        if rollout.previous is not None and locked.active_version_id == rollout.version_id:
            script_services.activate_version(actor=actor, tenant=locked,
                                             version=rollout.previous,
                                             detail={"rollout": rollout.pk})
        figures = guard_figures(rollout) if rollout.guarded else None
        script_services.end_rollout(rollout, state=Rollout.ROLLED_BACK, by=actor.name,
                                    outcome={"reason": "rolled back", "figures": figures})
        record(actor=actor, action="script.rollout_rollback", obj=rollout, tenant=locked,
               detail={"version": rollout.version.number,
                       "previous": rollout.previous.number if rollout.previous else None,
                       "percent": rollout.percent})
        config_changed([locked.slug])
    tenant.refresh_from_db(fields=["active_version", "config_version"])
    return rollout


def rollout_report(rollout: Rollout | None) -> dict[str, Any] | None:
    """A rollout for the API, the admin and the CLI, with its guard's live figures."""
    if rollout is None:
        return None
    guard = guard_of(rollout)
    report: dict[str, Any] = {
        "id": rollout.pk,
        "version": rollout.version.number,
        "previous": rollout.previous.number if rollout.previous else None,
        "percent": rollout.percent,
        "key": f"header {rollout.key_header}" if rollout.key_header else "client IP",
        "key_header": rollout.key_header or None,
        "guard": guard.to_dict() if guard else None,
        "state": rollout.state,
        "state_label": dict(Rollout.STATES).get(rollout.state, rollout.state),
        "started_by": rollout.started_by,
        "started_at": rollout.started_at.isoformat(),
        "ended_by": rollout.ended_by or None,
        "ended_at": rollout.ended_at.isoformat() if rollout.ended_at else None,
        "outcome": rollout.outcome or None,
        "figures": None,
    }
    if guard is not None and rollout.running:
        report["figures"] = guard_figures(rollout)
    elif rollout.outcome and rollout.outcome.get("figures"):
        report["figures"] = rollout.outcome["figures"]
    return report


def latest_rollout(tenant: Tenant) -> Rollout | None:
    return (Rollout.objects.filter(tenant=tenant).select_related("version", "previous")
            .order_by("-started_at", "-id").first())
