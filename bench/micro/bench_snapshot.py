"""Snapshot rebuild (routing.snapshot.build_snapshot) for 1 and 1,000 tenants.

Against a temporary SQLite database seeded through tenants.services / luascripts.services
(conftest.py): each tenant has one backend and an active 50-route script with one middleware.

- cold: no previous snapshot, so every tenant's script is loaded into a new Lua runtime (a
  worker's start-up, or the first build after a restart);
- warm: the previous snapshot is passed, nothing changed, so every script is reused from its
  cache (what each config change costs every worker; only changed tenants pay for a load).
"""

from __future__ import annotations

import pytest

from bench.micro.conftest import tenant_database
from routing.snapshot import build_snapshot


@pytest.mark.parametrize("tenants", [1, 1000])
def bench_snapshot_cold(benchmark, tenants):
    tenant_database(tenants)
    rounds = 10 if tenants == 1 else 3
    snapshot = benchmark.pedantic(build_snapshot, rounds=rounds, iterations=1,
                                  warmup_rounds=1 if tenants == 1 else 0)
    assert len(snapshot.tenants) == tenants
    assert all(t.script is not None for t in snapshot.tenants.values())


@pytest.mark.parametrize("tenants", [1, 1000])
def bench_snapshot_warm(benchmark, tenants):
    tenant_database(tenants)
    previous = build_snapshot()
    snapshot = benchmark.pedantic(build_snapshot, args=(previous,),
                                  rounds=20 if tenants == 1 else 5, iterations=1,
                                  warmup_rounds=1)
    assert len(snapshot.tenants) == tenants
    assert all(snapshot.tenants[s].script is previous.tenants[s].script
               for s in snapshot.tenants)
