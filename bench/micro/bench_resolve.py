"""Tenant resolution over 1,000 tenants (routing.resolve.Resolver), no database.

The claims mix every class: 700 exact hosts, 200 wildcard hosts (`*.w<i>.example.com`),
50 host + prefix and 50 prefix-only tenants. Each case resolves one request; the miss walks
every class before answering None (the gateway's 404).
"""

from __future__ import annotations

import pytest

from routing.resolve import Claim, Resolver

TENANTS = 1000


def _claims() -> list[Claim[str]]:
    claims = []
    for i in range(TENANTS):
        slug = f"t{i}"
        if i < 700:
            claims.append(Claim(f"t{i}.bench.local", "", slug))
        elif i < 900:
            claims.append(Claim(f"*.w{i}.example.com", "", slug))
        elif i < 950:
            claims.append(Claim("shared.example.com", f"/team{i}", slug))
        else:
            claims.append(Claim("", f"/p{i}/api", slug))
    return claims


RESOLVER = Resolver.compile(_claims())
CASES = {
    "exact_host": ("t650.bench.local", "/api/v1/svc40/items/12345", "t650"),
    "wildcard_host": ("a.b.w850.example.com", "/api/v1/items", "t850"),
    "host_and_prefix": ("shared.example.com", "/team920/api/v1/items/7", "t920"),
    "prefix_only": ("anything.example.org", "/p990/api/v1/items/7", "t990"),
    "miss": ("nobody.example.org", "/api/v1/items/7", None),
}


@pytest.mark.parametrize("case", list(CASES))
def bench_resolve_1000_tenants(benchmark, case):
    host, path, expected = CASES[case]
    found = benchmark(RESOLVER.resolve, host, path)
    assert (found.tenant if found else None) == expected


def bench_compile_resolver_1000_tenants(benchmark):
    claims = _claims()
    resolver = benchmark(Resolver.compile, claims)
    assert len(resolver.exact) == 700
