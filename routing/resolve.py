"""Tenant resolution: which tenant answers a (host, raw path), compiled once per snapshot.

Rules (from the original chi-stone):
1. Classes in order: tenants claiming a host *and* a prefix, then host-only tenants, then
   prefix-only tenants (any host).
2. Within a class an exact host beats a wildcard (`*.example.com`, which matches any
   subdomain depth but not `example.com` itself; a more specific wildcard beats a shorter one),
   and then the longest prefix wins.
3. Prefixes match whole segments on the raw path: `/acme` matches `/acme` and `/acme/x`, never
   `/acmex`. The tenant's router sees the rest of the path (`/` when nothing is left).
Hosts arrive normalised (lower-case, no port, no trailing dot; see routing.request).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Claim(Generic[T]):
    """One (host, prefix) a tenant answers for; host "" = any host, prefix "" = whole host."""

    host: str
    prefix: str
    tenant: T


@dataclass(frozen=True, slots=True)
class Match(Generic[T]):
    tenant: T
    prefix: str
    path: str  # the rest of the raw path, what the tenant's router sees


@dataclass(slots=True)
class Resolver(Generic[T]):
    exact_prefixed: dict[str, dict[str, T]] = field(default_factory=dict)
    wild_prefixed: dict[str, dict[str, T]] = field(default_factory=dict)  # key: ".example.com"
    exact: dict[str, T] = field(default_factory=dict)
    wild: dict[str, T] = field(default_factory=dict)
    prefixed: dict[str, T] = field(default_factory=dict)
    max_depth: int = 0

    @classmethod
    def compile(cls, claims: Iterable[Claim[T]]) -> Resolver[T]:
        resolver: Resolver[T] = cls()
        for claim in claims:
            host, prefix = claim.host.lower().rstrip("."), claim.prefix.rstrip("/")
            if prefix:
                resolver.max_depth = max(resolver.max_depth, prefix.count("/"))
            if host.startswith("*."):
                if prefix:
                    resolver.wild_prefixed.setdefault(host[1:], {})[prefix] = claim.tenant
                else:
                    resolver.wild[host[1:]] = claim.tenant
            elif host:
                if prefix:
                    resolver.exact_prefixed.setdefault(host, {})[prefix] = claim.tenant
                else:
                    resolver.exact[host] = claim.tenant
            elif prefix:
                resolver.prefixed[prefix] = claim.tenant
        return resolver

    def _prefixes(self, path: str) -> list[str]:
        """Whole-segment prefixes of `path`, longest first, no deeper than any claim."""
        out = []
        depth = 0
        index = path.find("/", 1)
        while index != -1 and depth < self.max_depth:
            out.append(path[:index])
            depth += 1
            index = path.find("/", index + 1)
        if depth < self.max_depth and len(path) > 1:
            out.append(path)
        out.reverse()
        return out

    def _suffixes(self, host: str) -> Iterable[str]:
        index = host.find(".")
        while index != -1:
            yield host[index:]
            index = host.find(".", index + 1)

    def resolve(self, host: str, path: str) -> Match[T] | None:
        prefixes: list[str] | None = None
        table = self.exact_prefixed.get(host)
        if table is not None:
            prefixes = self._prefixes(path)
            for prefix in prefixes:
                tenant = table.get(prefix)
                if tenant is not None:
                    return Match(tenant, prefix, _rest(path, prefix))
        if self.wild_prefixed:
            for suffix in self._suffixes(host):
                table = self.wild_prefixed.get(suffix)
                if table is not None:
                    prefixes = prefixes if prefixes is not None else self._prefixes(path)
                    for prefix in prefixes:
                        tenant = table.get(prefix)
                        if tenant is not None:
                            return Match(tenant, prefix, _rest(path, prefix))
        tenant = self.exact.get(host)
        if tenant is not None:
            return Match(tenant, "", path)
        if self.wild:
            for suffix in self._suffixes(host):
                tenant = self.wild.get(suffix)
                if tenant is not None:
                    return Match(tenant, "", path)
        if self.prefixed:
            for prefix in prefixes if prefixes is not None else self._prefixes(path):
                tenant = self.prefixed.get(prefix)
                if tenant is not None:
                    return Match(tenant, prefix, _rest(path, prefix))
        return None


def _rest(path: str, prefix: str) -> str:
    return path[len(prefix):] or "/"
