import pytest

from routing.resolve import Claim, Resolver


@pytest.fixture
def resolver():
    claims = [
        Claim("api.example.com", "/billing", "exact+prefix"),
        Claim("api.example.com", "/billing/v2", "exact+longer-prefix"),
        Claim("*.example.com", "/billing", "wild+prefix"),
        Claim("*.example.com", "/billing/v2/deep", "wild+longer-prefix"),
        Claim("api.example.com", "", "exact-host"),
        Claim("*.example.com", "", "wild-host"),
        Claim("*.eu.example.com", "", "wild-host-specific"),
        Claim("", "/acme", "prefix-acme"),
        Claim("", "/acme/admin", "prefix-acme-admin"),
    ]
    return Resolver.compile(claims)


@pytest.mark.parametrize(("host", "path", "tenant", "rest"), [
    ("api.example.com", "/billing/x", "exact+prefix", "/x"),
    ("api.example.com", "/billing/v2/x", "exact+longer-prefix", "/x"),
    ("api.example.com", "/billing/v2/deep/x", "exact+longer-prefix", "/deep/x"),  # exact first
    ("api.example.com", "/billing", "exact+prefix", "/"),
    ("api.example.com", "/billingx", "exact-host", "/billingx"),  # whole segments only
    ("api.example.com", "/other", "exact-host", "/other"),
    ("api.example.com", "/acme/x", "exact-host", "/acme/x"),  # host-only beats prefix-only
    ("www.example.com", "/billing/v2/deep/x", "wild+longer-prefix", "/x"),
    ("www.example.com", "/billing/x", "wild+prefix", "/x"),
    ("www.example.com", "/x", "wild-host", "/x"),
    ("a.b.example.com", "/x", "wild-host", "/x"),  # any depth
    ("x.eu.example.com", "/x", "wild-host-specific", "/x"),  # most specific wildcard
    ("example.com", "/acme/x", "prefix-acme", "/x"),  # apex is not matched by the wildcard
    ("other.test", "/acme", "prefix-acme", "/"),
    ("other.test", "/acme/", "prefix-acme", "/"),
    ("other.test", "/acme/admin/users", "prefix-acme-admin", "/users"),
    ("other.test", "/acme/administrator", "prefix-acme", "/administrator"),
])
def test_priorities(resolver, host, path, tenant, rest):
    match = resolver.resolve(host, path)
    assert match is not None
    assert (match.tenant, match.path) == (tenant, rest)


@pytest.mark.parametrize(("host", "path"), [("other.test", "/acmex"), ("other.test", "/"),
                                            ("example.com", "/")])
def test_unknown(resolver, host, path):
    assert resolver.resolve(host, path) is None


def test_prefix_is_raw_and_case_sensitive():
    resolver = Resolver.compile([Claim("", "/acme", "t")])
    assert resolver.resolve("h", "/%61cme/x") is None
    assert resolver.resolve("h", "/ACME/x") is None


def test_many_tenants():
    claims = [Claim(f"t{i}.example.com", "", i) for i in range(1000)]
    claims += [Claim("", f"/p{i}", -i) for i in range(1000)]
    resolver = Resolver.compile(claims)
    assert resolver.resolve("t999.example.com", "/x").tenant == 999
    assert resolver.resolve("nope", "/p500/x").tenant == -500
