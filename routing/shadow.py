"""Shadow runs: a second version decides on sampled live requests, after they are answered.

When a tenant has a shadow (chistone_site.actions.shadows), the gateway offers each request
it answered to the `ShadowRunner` (`offer`, one random draw for tenants with a shadow, nothing
for the others). A sampled request is queued and handled later on the event loop, one per
callback, never before the client has its whole answer: both the active version and the
shadow run on it through the one driver (routing.script_run) with stub effects that answer
nothing (routing.stubs: no upstream call, http.request gets "no_stub", nothing is written
anywhere), then `decision()` reduces each to what is compared:

    {"kind": "proxy"|"respond"|"reject"|"error", "backend", "path", "query", "status",
     "error"}

Both decide under the same conditions, so a difference is the scripts', not the network's
(a backend pool picks its heaviest member deterministically here). The shadow sees the
request body only when the active script read it. Bounded: at most `max_queue` requests
wait, and shadow runs may use at most `cpu_share` of the worker's time (a budget refilled
by the clock); beyond either, a sampled request is dropped and counted. Per route of the
active version the runner counts compared and mismatched requests and keeps the first
mismatches; the data plane's reporter takes them about once a second (`take`) and writes
them to the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from luascripts.engine.errors import BodyUnavailable, ResponseUnavailable
from luascripts.engine.types import ExchangeAction, RejectAction
from routing.errors import GatewayError
from routing.patch import patch_status
from routing.plan import DirectResponse, UpstreamPlan, decide, script_request
from routing.request import ClientRequest
from routing.script_run import ScriptGuard, run_script
from routing.snapshot import TenantEntry
from routing.stubs import NoStub, StubEffects, run_sync

log = logging.getLogger("chistone.shadow")

SAMPLES_PER_REPORT = 10  # mismatches a worker passes on per report; the database keeps 50


@dataclass(frozen=True, slots=True)
class ShadowEntry:
    """A running shadow as the data plane serves it (routing.snapshot builds it)."""

    id: int
    script: Any  # the shadow version's LoadedScript
    version_id: int
    version_number: int
    rate: float


@dataclass
class ShadowCounts:
    """What one worker compared for one shadow since its last report."""

    routes: dict[str, list[int]] = field(default_factory=dict)  # route -> [compared, mism.]
    samples: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0


def _plan(plan: UpstreamPlan) -> dict[str, Any]:
    return {"kind": "proxy", "backend": plan.backend.name, "path": plan.path,
            "query": plan.query, "status": None, "error": None}


def _error(status: int, code: str) -> dict[str, Any]:
    return {"kind": "error", "backend": None, "path": None, "query": None, "status": status,
            "error": code}


def decision(script: Any, tenant: TenantEntry, request: ClientRequest, router_path: str,
             body: bytes, healthy: Callable[[Any], bool],
             guard: ScriptGuard | None = None, version_id: int = 0
             ) -> tuple[dict[str, Any], str]:
    """What `script` decides for the request, without effects; and its route pattern."""
    if bool(getattr(script, "is_selector", False)) != tenant.is_selector:
        tenant = replace(tenant, is_selector=not tenant.is_selector)
    effects = StubEffects(tenant=tenant, request=request, router_path=router_path,
                          limits=script.limits, body=body, healthy=healthy)
    try:
        outcome = run_sync(run_script(script, script_request(tenant, request, router_path,
                                                             healthy), effects,
                                      guard=guard, tenant=tenant.slug, version=version_id))
    except NoStub as stop:  # a middleware waited for the proxied answer: the plan decides
        return _plan(stop.plan), "-"
    except BodyUnavailable as exc:
        return _error(400, f"body_{exc.reason}"), "-"
    except ResponseUnavailable as exc:
        return _error(502, f"response_{exc.reason}"), "-"
    except Exception:  # a script error: the data plane answers 500
        return _error(500, "script_error"), "-"
    route = outcome.route_pattern or "-"
    action = outcome.action
    if isinstance(action, ExchangeAction):
        opened = effects.opened.get(action.exchange)
        if opened is not None and opened.plan is not None:
            return _plan(opened.plan), route
        error = opened.error if opened is not None else None
        return _error(error.status if error else 502, error.code if error else "exchange"), route
    if isinstance(action, RejectAction):
        status = patch_status(action.status, outcome.patch)
        return {"kind": "reject", "backend": None, "path": None, "query": None,
                "status": status, "error": None}, route
    try:
        decided = decide(tenant, request, router_path, outcome, healthy=healthy)
    except GatewayError as exc:
        return _error(exc.status, exc.code), route
    if isinstance(decided, DirectResponse):
        return {"kind": "respond", "backend": None, "path": None, "query": None,
                "status": patch_status(decided.status, outcome.patch), "error": None}, route
    return _plan(decided), route


class ShadowRunner:
    """Queue, run and count shadow comparisons for one worker (see the module docstring)."""

    def __init__(self, *, healthy: Callable[[Any], bool], guard: ScriptGuard | None = None,
                 max_queue: int = 256, cpu_share: float = 0.1,
                 rng: Callable[[], float] = random.random) -> None:
        self.healthy = healthy
        self.guard = guard
        self.max_queue = max_queue
        self.cpu_share = cpu_share
        self.rng = rng
        self.queue: deque[tuple[TenantEntry, ClientRequest, str, bytes]] = deque()
        self.counts: dict[int, ShadowCounts] = {}
        self.scheduled = False
        self.budget = cpu_share  # seconds of CPU shadow runs may spend now
        self.refilled = time.monotonic()
        self.ran = 0  # comparisons made by this worker (bench and tests read it)
        self.seconds = 0.0  # CPU time they took
        # Since the worker started, per tenant: [same, different, dropped] (the metrics).
        self.totals: dict[str, list[int]] = {}

    def offer(self, tenant: TenantEntry, request: ClientRequest, router_path: str,
              body: bytes) -> None:
        """Called by the gateway once the request is answered: sample it, queue it."""
        shadow = tenant.shadow
        if shadow is None or self.rng() >= shadow.rate:
            return
        if len(self.queue) >= self.max_queue:
            self._drop(tenant.slug, shadow.id)
            return
        self.queue.append((tenant, request, router_path, body))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._run_one)

    def _drop(self, tenant: str, shadow_id: int) -> None:
        self._counts(shadow_id).dropped += 1
        self._total(tenant)[2] += 1

    def _total(self, tenant: str) -> list[int]:
        total = self.totals.get(tenant)
        if total is None:
            total = self.totals[tenant] = [0, 0, 0]
        return total

    def _counts(self, shadow_id: int) -> ShadowCounts:
        counts = self.counts.get(shadow_id)
        if counts is None:
            counts = self.counts[shadow_id] = ShadowCounts()
        return counts

    def _refill(self) -> None:
        now = time.monotonic()
        self.budget = min(self.cpu_share, self.budget + (now - self.refilled) * self.cpu_share)
        self.refilled = now

    def _run_one(self) -> None:
        """One comparison per event-loop callback: requests waiting to be served go first."""
        self.scheduled = False
        if not self.queue:
            return
        tenant, request, path, body = self.queue.popleft()
        shadow = tenant.shadow
        assert shadow is not None
        self._refill()
        if self.budget <= 0:
            self._drop(tenant.slug, shadow.id)
        else:
            started = time.process_time()
            try:
                self.compare(tenant, request, path, body)
            except Exception:  # a bug here must not touch traffic
                log.exception("shadow comparison failed for tenant %s", tenant.slug)
            spent = time.process_time() - started
            self.budget -= spent
            self.seconds += spent
        if self.queue:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._run_one)

    def compare(self, tenant: TenantEntry, request: ClientRequest, path: str,
                body: bytes) -> bool:
        """Run both versions on one request and count the result; True on a mismatch."""
        shadow = tenant.shadow
        assert shadow is not None and tenant.script is not None
        active, route = decision(tenant.script, tenant, request, path, body, self.healthy,
                                 self.guard, tenant.version_id or 0)
        candidate, _ = decision(shadow.script, tenant, request, path, body, self.healthy,
                                self.guard, shadow.version_id)
        self.ran += 1
        counts = self._counts(shadow.id)
        slot = counts.routes.get(route)
        if slot is None:
            if len(counts.routes) >= 1000:  # bound memory against a flood of patterns
                route = "(other)"
                slot = counts.routes.setdefault(route, [0, 0])
            else:
                slot = counts.routes[route] = [0, 0]
        slot[0] += 1
        mismatch = active != candidate
        self._total(tenant.slug)[1 if mismatch else 0] += 1
        if mismatch:
            slot[1] += 1
            if len(counts.samples) < SAMPLES_PER_REPORT:
                counts.samples.append({
                    "request_id": request.request_id, "route": route,
                    "method": request.method, "path": request.raw_path[:300],
                    "active": active, "shadow": candidate})
        return mismatch

    def take(self) -> dict[int, ShadowCounts]:
        counts, self.counts = self.counts, {}
        return counts
