"""Backend health, per process: passive ejection, active checks, and counters for the admin.

- Passive: `failures` consecutive failed exchanges (refused, reset, timed out, invalid
  response) take a backend out for `cooldown` seconds; after that it gets traffic again, and
  one more failure takes it out again at once, one success clears the count.
- Active: every `interval` seconds each backend with a health-check path is asked
  `GET base_path + health_check_path`; a 2xx or 3xx within the timeout is good. `fall` bad
  checks in a row take it out, `rise` good checks in a row bring it back.
A backend is healthy when neither says it is out. State is keyed by `BackendEntry.key`
(tenant/name@url), so an edited URL starts fresh and an unchanged backend keeps its state
across snapshot rebuilds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from routing.conf import GatewayConf, default
from routing.snapshot import BackendEntry, Snapshot

log = logging.getLogger("chistone.health")
Probe = Callable[[BackendEntry, float], Awaitable[bool]]


@dataclass(slots=True)
class BackendHealth:
    consecutive_failures: int = 0
    ejected_until: float = 0.0  # monotonic; passive ejection end
    active_down: bool = False
    active_ok_streak: int = 0
    active_bad_streak: int = 0
    last_check: float = 0.0  # wall clock of the last active check
    last_check_ok: bool | None = None
    requests: int = 0
    errors: int = 0
    ejections: int = 0
    last_error: str = ""
    check_reason: str = ""  # why the last active check failed ("" when it passed)
    shown: str = ""  # the state the last report showed, and since when (wall clock)
    since: float = 0.0

    def healthy(self, now: float) -> bool:
        return not self.active_down and self.ejected_until <= now


@dataclass
class HealthRegistry:
    """Health of every backend one process sends to (the defaults are routing.conf's)."""

    failures: int = default("PASSIVE_FAILURES")
    cooldown: float = default("PASSIVE_COOLDOWN_S")
    rise: int = default("HEALTH_RISE")
    fall: int = default("HEALTH_FALL")
    states: dict[str, BackendHealth] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_conf(cls, conf: GatewayConf) -> HealthRegistry:
        return cls(failures=conf.passive_failures, cooldown=conf.passive_cooldown_s,
                   rise=conf.health_rise, fall=conf.health_fall)

    def state(self, backend: BackendEntry) -> BackendHealth:
        key = backend.key
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = BackendHealth()
        return state

    def is_healthy(self, backend: BackendEntry) -> bool:
        state = self.states.get(backend.key)
        return state is None or state.healthy(self.clock())

    # -- passive ------------------------------------------------------------------------
    def record_success(self, backend: BackendEntry) -> None:
        state = self.state(backend)
        state.requests += 1
        state.consecutive_failures = 0

    def record_failure(self, backend: BackendEntry, reason: str) -> None:
        state = self.state(backend)
        state.requests += 1
        state.errors += 1
        state.consecutive_failures += 1
        state.last_error = reason
        now = self.clock()
        if state.consecutive_failures >= self.failures and state.ejected_until <= now:
            state.ejected_until = now + self.cooldown
            state.ejections += 1
            log.warning("backend %s taken out for %.0fs after %d failures in a row (%s)",
                        backend.key, self.cooldown, state.consecutive_failures, reason)

    # -- active -------------------------------------------------------------------------
    def record_check(self, backend: BackendEntry, ok: Any) -> None:
        """`ok` is truthy for a passed check; a failed one may carry a `reason` attribute
        (the probe's verdict, e.g. "answered HTTP 503"), kept for the admin."""
        state = self.state(backend)
        state.last_check = time.time()
        state.last_check_ok = bool(ok)
        state.check_reason = "" if ok else (getattr(ok, "reason", "")
                                            or "the check did not complete in time")
        if ok:
            state.active_bad_streak = 0
            state.active_ok_streak += 1
            if state.active_down and state.active_ok_streak >= self.rise:
                state.active_down = False
                state.consecutive_failures = 0
                state.ejected_until = 0.0
                log.info("backend %s passed %d checks: back in", backend.key, self.rise)
        else:
            state.active_ok_streak = 0
            state.active_bad_streak += 1
            if not state.active_down and state.active_bad_streak >= self.fall:
                state.active_down = True
                log.warning("backend %s failed %d checks: out", backend.key, self.fall)

    def prune(self, snapshot: Snapshot) -> None:
        """Forget backends that are no longer in the configuration."""
        keep = {b.key for b in snapshot.backends()}
        for key in list(self.states):
            if key not in keep:
                del self.states[key]

    # -- for the admin dashboard ------------------------------------------------------------
    def report(self, snapshot: Snapshot | None) -> dict[str, dict[str, dict[str, Any]]]:
        """{tenant: {backend: {state, reason, since, healthy, enabled, passive/active state,
        requests, errors}}}.

        `state` is what an operator is shown: "disabled"; "pending" (an active check is set
        up but has not run yet, traffic still flows); "unhealthy" (taken out, `reason` says
        why); "healthy". `since` is when this worker first reported that state.
        """
        now = self.clock()
        wall = time.time()
        out: dict[str, dict[str, dict[str, Any]]] = {}
        if snapshot is None:
            return out
        for tenant in snapshot.tenants.values():
            rows = out.setdefault(tenant.slug, {})
            for backend in tenant.backends.values():
                state = self.state(backend)
                healthy = state.healthy(now)
                reason = ""
                if not backend.enabled:
                    shown = "disabled"
                elif not healthy:
                    shown = "unhealthy"
                    if state.active_down:
                        reason = (f"failed {self.fall} active checks in a row: "
                                  f"{state.check_reason or 'the check failed'}")
                    else:
                        reason = (f"{self.failures} failed requests in a row, out for "
                                  f"{state.ejected_until - now:.0f} s more: {state.last_error}")
                elif backend.health_check_path and state.last_check_ok is None:
                    shown = "pending"
                else:
                    shown = "healthy"
                if shown != state.shown:
                    state.shown, state.since = shown, wall
                rows[backend.name] = {
                    "url": backend.url,
                    "state": shown,
                    "reason": reason,
                    "since": state.since,
                    "check_reason": state.check_reason,
                    "enabled": backend.enabled,
                    "healthy": backend.enabled and healthy,
                    "ejected_for_s": round(max(0.0, state.ejected_until - now), 3),
                    "active_checked": bool(backend.health_check_path),
                    "active_down": state.active_down,
                    "last_check": state.last_check or None,
                    "last_check_ok": state.last_check_ok,
                    "consecutive_failures": state.consecutive_failures,
                    "requests": state.requests,
                    "errors": state.errors,
                    "ejections": state.ejections,
                    "last_error": state.last_error,
                }
        return out


class ActiveChecker:
    """Background task: probe every backend that has a health-check path, at an interval."""

    def __init__(self, registry: HealthRegistry, get_snapshot: Callable[[], Snapshot | None],
                 probe: Probe, *, interval: float, timeout: float) -> None:
        self.registry = registry
        self.get_snapshot = get_snapshot
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def check_once(self) -> None:
        snapshot = self.get_snapshot()
        if snapshot is None:
            return
        targets = [b for b in snapshot.backends() if b.enabled and b.health_check_path]
        results = await asyncio.gather(*(self._check(b) for b in targets))
        for backend, ok in zip(targets, results, strict=True):
            self.registry.record_check(backend, ok)

    async def _check(self, backend: BackendEntry) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.probe(backend, self.timeout)
        except Exception:
            return False

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("active health round failed")
            await asyncio.sleep(self.interval)
