"""Writing what a worker counted for guarded rollouts and shadows to the database.

Called about once a second by the data plane's reporter, in a thread (never on the event
loop), with what `routing.guard.GuardCounter.take()` and `routing.shadow.ShadowRunner.take()`
handed over. Guard counts become new GuardCount rows (one per rollout and side: inserts only,
so workers never wait on one another's rows); shadow counts are added to their ShadowRoute
rows and the first mismatches are kept, at most MAX_SAMPLES per shadow. The database is the
one store every node shares (see chistone_site.actions.guard for why not Redis).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from routing.shadow import ShadowCounts

MAX_SAMPLES = 50  # mismatches kept per shadow, for people to read


def write(shadows: dict[int, ShadowCounts], guards: dict[tuple[int, int], list[int]],
          *, now: float | None = None) -> set[int]:
    """Record one report; returns the ids of the running rollouts it counted for."""
    from luascripts.models import GuardCount, Rollout, Shadow

    second = int(now if now is not None else time.time())
    with transaction.atomic():
        running = set(Rollout.objects.filter(
            pk__in={rollout_id for rollout_id, _arm in guards}, state=Rollout.RUNNING,
        ).values_list("pk", flat=True))
        GuardCount.objects.bulk_create([
            GuardCount(rollout_id=rollout_id, arm=arm, second=second, requests=requests,
                       errors=errors)
            for (rollout_id, arm), (requests, errors) in guards.items() if rollout_id in running
        ])
        known = set(Shadow.objects.filter(pk__in=list(shadows)).values_list("pk", flat=True))
        for shadow_id, counts in shadows.items():
            if shadow_id in known:
                _write_shadow(shadow_id, counts)
    return running


def _write_shadow(shadow_id: int, counts: ShadowCounts) -> None:
    from luascripts.models import Shadow, ShadowRoute, ShadowSample

    for route, (compared, mismatched) in counts.routes.items():
        route = route[:300]
        bump = {"compared": F("compared") + compared, "mismatched": F("mismatched") + mismatched}
        if ShadowRoute.objects.filter(shadow_id=shadow_id, route=route).update(**bump):
            continue
        try:
            with transaction.atomic():  # another worker may create the row at the same time
                ShadowRoute.objects.create(shadow_id=shadow_id, route=route,
                                           compared=compared, mismatched=mismatched)
        except IntegrityError:
            ShadowRoute.objects.filter(shadow_id=shadow_id, route=route).update(**bump)
    if counts.dropped:
        Shadow.objects.filter(pk=shadow_id).update(dropped=F("dropped") + counts.dropped)
    if counts.samples:
        room = MAX_SAMPLES - ShadowSample.objects.filter(shadow_id=shadow_id).count()
        ShadowSample.objects.bulk_create([_sample(shadow_id, s) for s in counts.samples[:room]])


def _sample(shadow_id: int, sample: dict[str, Any]) -> Any:
    from luascripts.models import ShadowSample

    return ShadowSample(shadow_id=shadow_id, request_id=sample["request_id"][:100],
                        route=sample["route"][:300], method=sample["method"][:20],
                        path=sample["path"][:300], active=sample["active"],
                        candidate=sample["shadow"])
