"""What a worker counts for the guard of a rollout, between two reports.

Per guarded rollout and side (the previous version, OLD; the rollout's version, NEW): the
requests answered and how many were errors (5xx, script errors included). Counting is two
dict operations per request, and only for tenants with a guard armed. About once a second
the data plane's reporter takes the counts and writes them to the database, where the
guard sums every worker of every node (chistone_site.actions.guard).
"""

from __future__ import annotations

OLD, NEW = 1, 2  # luascripts.models.GuardCount.OLD / NEW

# Auto rollbacks this process performed, by tenant: the node's metrics export them.
auto_rollbacks: dict[str, int] = {}


def note_auto_rollback(tenant: str) -> None:
    auto_rollbacks[tenant] = auto_rollbacks.get(tenant, 0) + 1


class GuardCounter:
    __slots__ = ("counts",)

    def __init__(self) -> None:
        # (rollout id, arm) -> [requests, errors]
        self.counts: dict[tuple[int, int], list[int]] = {}

    def count(self, rollout_id: int, arm: int, status: int) -> None:
        key = (rollout_id, arm)
        slot = self.counts.get(key)
        if slot is None:
            slot = self.counts[key] = [0, 0]
        slot[0] += 1
        if status >= 500:
            slot[1] += 1

    def take(self) -> dict[tuple[int, int], list[int]]:
        counts, self.counts = self.counts, {}
        return counts
