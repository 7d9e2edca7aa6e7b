"""Choosing one backend among candidates: smooth weighted round robin, or consistent hashing.

Candidates are already filtered (enabled, healthy, weight > 0) by the caller. The round-robin
state lives per candidate set in this object (one per process); hashing keeps no state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Weighted(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...


B = TypeVar("B", bound=Weighted)


class Balancer:
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, ...], list[int]] = {}

    def pick(self, pool_key: str, candidates: Sequence[B]) -> B:
        if len(candidates) == 1:
            return candidates[0]
        key = (pool_key, *(c.name for c in candidates))
        current = self._current.get(key)
        if current is None or len(current) != len(candidates):
            if len(self._current) > 10_000:  # candidate sets come and go with health changes
                self._current.clear()
            current = self._current[key] = [0] * len(candidates)
        total = 0
        best = 0
        for index, candidate in enumerate(candidates):
            weight = candidate.weight
            current[index] += weight
            total += weight
            if current[index] > current[best]:
                best = index
        current[best] -= total
        return candidates[best]


def pick_hashed(key: str, candidates: Sequence[B]) -> B:
    """Weighted rendezvous hashing: a key keeps its backend while that backend is a candidate;
    when one leaves, only its keys move (spread over the others by weight)."""
    if len(candidates) == 1:
        return candidates[0]
    best = candidates[0]
    best_score = -math.inf
    for candidate in candidates:
        digest = hashlib.blake2b(
            f"{candidate.name}\x00{key}".encode(), digest_size=8
        ).digest()
        unit = (int.from_bytes(digest, "big") + 1) / 2.0**64  # in (0, 1]
        score = -candidate.weight / math.log(unit) if unit < 1.0 else math.inf
        if score > best_score:
            best, best_score = candidate, score
    return best
