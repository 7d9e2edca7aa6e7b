"""The guard of a rollout: roll it back by itself when the new version fails more.

A rollout (or an activation) may carry a guard: `max_error_rate`, `min_requests`, `window_s`.
Every gateway worker counts, per guarded rollout, the requests each side answered and how
many of them were errors (5xx answers; a script error answers 500), and about once a second
inserts what it counted as GuardCount rows (routing.guard counts, the data plane's
reporter writes). Over the last `window_s` seconds, summed across every worker of every
node:

    new rate = errors / requests of the rollout's version
    old rate = errors / requests of the previous version (0 when it served none)

Once the new version has at least `min_requests` requests in the window and
`new rate - old rate > max_error_rate`, the rollout is rolled back (do_auto_rollback): one
transaction ends it, records an `auto_rollback` audit event with the figures, bumps the
configuration generation (every node reloads), and logs a warning. Every worker checks the
guards of the rollouts it counted right after writing its counts; the row lock makes the
first one to see the figures the only one to act.

Why the database and not Redis: the database is the one store every node always has (Redis
is optional), it already carries the configuration the rollback changes (so the rollback and
its counts are in one place and one transaction), and the load is small: one insert per
worker per second per guarded rollout, not per request.

A guarded activation of the whole traffic (percent 100) compares with an old rate of 0 (the
previous version serves nothing), and completes by itself once a full window passed with
`min_requests` and no trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Sum

from luascripts import services as script_services
from luascripts.models import GuardCount, Rollout
from tenants.audit import Actor, record
from tenants.errors import InvalidInput
from tenants.events import config_changed
from tenants.models import Tenant

log = logging.getLogger("chistone.guard")

GUARD_ACTOR = Actor.system("guard")
MAX_WINDOW_S = 86_400
MAX_MIN_REQUESTS = 10_000_000


@dataclass(frozen=True, slots=True)
class Guard:
    """When to roll a rollout back: see the module docstring."""

    max_error_rate: float
    min_requests: int
    window_s: int

    @classmethod
    def parse(cls, value: Any) -> Guard | None:
        """A guard from {"max_error_rate", "min_requests", "window_s"}; None for None."""
        if value in (None, {}):
            return None
        if not isinstance(value, dict):
            raise InvalidInput("guard must be an object {max_error_rate, min_requests, "
                               "window_s}.")
        unknown = set(value) - {"max_error_rate", "min_requests", "window_s"}
        missing = {"max_error_rate", "min_requests", "window_s"} - set(value)
        if unknown or missing:
            raise InvalidInput(
                "guard needs exactly max_error_rate, min_requests and window_s"
                + (f"; unknown: {', '.join(sorted(map(str, unknown)))}" if unknown else "")
                + (f"; missing: {', '.join(sorted(missing))}" if missing else "") + ".")
        rate, minimum, window = (value["max_error_rate"], value["min_requests"],
                                 value["window_s"])
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise InvalidInput("guard.max_error_rate is a share of requests from 0 to 1 "
                               "(0.05 = 5 points more errors than the previous version).")
        for name, number, top in (("min_requests", minimum, MAX_MIN_REQUESTS),
                                  ("window_s", window, MAX_WINDOW_S)):
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= top:
                raise InvalidInput(f"guard.{name} is a whole number from 1 to {top}.")
        return cls(float(rate), minimum, window)

    def to_dict(self) -> dict[str, Any]:
        return {"max_error_rate": self.max_error_rate, "min_requests": self.min_requests,
                "window_s": self.window_s}


def guard_of(rollout: Rollout) -> Guard | None:
    if rollout.max_error_rate is None:
        return None
    return Guard(rollout.max_error_rate, rollout.min_requests or 1, rollout.window_s or 60)


def guard_figures(rollout: Rollout, *, now: float | None = None) -> dict[str, Any]:
    """The guard's figures over its window, summed over every worker of every node."""
    guard = guard_of(rollout)
    window = guard.window_s if guard is not None else 60
    since = int(now if now is not None else time.time()) - window
    sums = {arm: (0, 0) for arm in (GuardCount.OLD, GuardCount.NEW)}
    for row in (GuardCount.objects.filter(rollout=rollout, second__gt=since)
                .values("arm").annotate(requests=Sum("requests"), errors=Sum("errors"))):
        sums[row["arm"]] = (row["requests"] or 0, row["errors"] or 0)

    def side(arm: int, number: int | None) -> dict[str, Any]:
        requests, errors = sums[arm]
        return {"version": number, "requests": requests, "errors": errors,
                "error_rate": round(errors / requests, 4) if requests else 0.0}

    new = side(GuardCount.NEW, rollout.version.number)
    old = side(GuardCount.OLD, rollout.previous.number if rollout.previous else None)
    figures: dict[str, Any] = {"window_s": window, "new": new, "old": old,
                               "difference": round(new["error_rate"] - old["error_rate"], 4)}
    if guard is not None:
        figures.update(guard.to_dict())
        figures["tripped"] = (new["requests"] >= guard.min_requests
                              and new["error_rate"] - old["error_rate"] > guard.max_error_rate)
    return figures


def check_guards(rollout_ids: Iterable[int] | None = None, *,
                 now: float | None = None) -> list[Rollout]:
    """Evaluate the guards of running rollouts (those named, or all); roll back the ones
    that tripped, complete guarded full activations that passed a clean window. Returns
    the rollouts this call ended."""
    now = now if now is not None else time.time()
    running = Rollout.objects.filter(state=Rollout.RUNNING, max_error_rate__isnull=False
                                     ).select_related("tenant", "version", "previous")
    if rollout_ids is not None:
        running = running.filter(pk__in=list(rollout_ids))
    ended = []
    for rollout in running:
        figures = guard_figures(rollout, now=now)
        if figures["tripped"]:
            done = do_auto_rollback(rollout_id=rollout.pk, figures=figures)
        elif (rollout.percent == 100 and rollout.window_s is not None
              and now - rollout.started_at.timestamp() >= rollout.window_s
              and figures["new"]["requests"] >= (rollout.min_requests or 1)):
            done = _complete_watch(rollout_id=rollout.pk, figures=figures)
        else:
            done = None
        if done is not None:
            ended.append(done)
        # Counts older than the window are never read again.
        GuardCount.objects.filter(rollout=rollout,
                                  second__lt=int(now) - (rollout.window_s or 60) - 5).delete()
    return ended


def do_auto_rollback(*, rollout_id: int, figures: dict[str, Any]) -> Rollout | None:
    """The guard tripped: end the rollout (and, after a guarded full activation, make the
    previous version active again), record `auto_rollback` with the figures. None when
    another worker already ended it."""
    with transaction.atomic():
        rollout = (Rollout.objects.select_for_update(of=("self",))
                   .select_related("version", "previous")
                   .filter(pk=rollout_id, state=Rollout.RUNNING).first())
        if rollout is None:
            return None
        tenant = Tenant.objects.select_for_update().get(pk=rollout.tenant_id)
        restored = None
        if (rollout.previous is not None and tenant.active_version_id == rollout.version_id):
            # A guarded full activation: the previous version goes back in. Not an
            # activation by a person: no tests, it is what served a moment ago.
            script_services.activate_version(actor=GUARD_ACTOR, tenant=tenant,
                                             version=rollout.previous,
                                             detail={"rollout": rollout.pk, "guard": True})
            restored = rollout.previous.number
        script_services.end_rollout(rollout, state=Rollout.AUTO_ROLLED_BACK,
                                    by=GUARD_ACTOR.name,
                                    outcome={"reason": "guard", "figures": figures})
        new, old = figures["new"], figures["old"]
        record(actor=GUARD_ACTOR, action="auto_rollback", obj=rollout, tenant=tenant,
               detail={"version": rollout.version.number,
                       "previous": rollout.previous.number if rollout.previous else None,
                       "percent": rollout.percent, "restored": restored, **figures})
        config_changed([tenant.slug])
    log.warning(
        "auto rollback: tenant %s v%s rolled back to v%s: error rate %.1f%% (%d/%d) vs "
        "%.1f%% (%d/%d) for the previous version over %ss, threshold %.1f points",
        tenant.slug, rollout.version.number,
        rollout.previous.number if rollout.previous else "-",
        new["error_rate"] * 100, new["errors"], new["requests"],
        old["error_rate"] * 100, old["errors"], old["requests"], figures["window_s"],
        figures.get("max_error_rate", 0) * 100)
    try:  # the node's metrics count it (routing.guard keeps the counter)
        from routing.guard import note_auto_rollback

        note_auto_rollback(tenant.slug)
    except Exception:  # pragma: no cover - metrics must never undo a rollback
        log.exception("could not count the auto rollback")
    return rollout


def _complete_watch(*, rollout_id: int, figures: dict[str, Any]) -> Rollout | None:
    with transaction.atomic():
        rollout = (Rollout.objects.select_for_update(of=("self",))
                   .select_related("version", "tenant")
                   .filter(pk=rollout_id, state=Rollout.RUNNING).first())
        if rollout is None:
            return None
        script_services.end_rollout(rollout, state=Rollout.COMPLETED, by=GUARD_ACTOR.name,
                                    outcome={"reason": "guard passed", "figures": figures})
        record(actor=GUARD_ACTOR, action="script.rollout_complete", obj=rollout,
               tenant=rollout.tenant, detail={"version": rollout.version.number,
                                              "guard_passed": True, **figures})
        config_changed([rollout.tenant.slug])
    return rollout
