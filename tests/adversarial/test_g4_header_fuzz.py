"""Group 4 (fuzzing): request-header handling (routing/headers.py, routing/request.py).

Hypothesis throws arbitrary header lists, Connection values, X-Forwarded-For chains and
trusted-proxy sets at the functions that decide what a backend and a script get to see.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from routing.conf import get_conf
from routing.errors import GatewayError
from routing.forwarded import TrustedProxies, parse_networks
from routing.headers import (
    HOP_BY_HOP,
    MANAGED_REQUEST,
    connection_named,
    downstream_headers,
    strip_hop_by_hop,
    upstream_request_headers,
)
from routing.request import parse_scope
from routing.request_id import valid_request_id
from tests.routing.asgi import http_scope

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INTERESTING_NAMES = sorted(HOP_BY_HOP | MANAGED_REQUEST | {
    "x-secret", "x-real-ip", "cookie", "authorization", "x-a", "content-type", "accept"})
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1,
                max_size=12)
names = st.one_of(st.sampled_from(INTERESTING_NAMES), token)
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                        blacklist_characters="\x7f"), max_size=30)


@st.composite
def connection_values(draw) -> str:
    listed = draw(st.lists(names, max_size=4))
    sep = draw(st.sampled_from([", ", ",", " , ", "\t,", " "]))
    cased = [draw(st.sampled_from([n, n.upper(), n.title()])) for n in listed]
    return sep.join(cased)


header_lists = st.lists(st.tuples(names, values), max_size=12)

ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
addresses = st.one_of(ipv4, ipv6, st.sampled_from(["10.0.0.1", "10.1.2.3", "192.168.1.1",
                                                   "127.0.0.1", "::1", "fd00::1"]))
junk = st.sampled_from(["", "unknown", "junk", "1.2.3", "999.1.1.1", "_hidden", "[::1",
                       "10.0.0.5:99999", "1.2.3.4:", "fe80::1%eth0"])
with_ports = st.sampled_from(["[::1]:80", "203.0.113.7:5555", "10.0.0.5:80",
                              "[2001:db8::7]:443", "[fd00::9]", "192.168.1.1:1"])
chains = st.lists(st.one_of(addresses, junk, with_ports), max_size=6)
trusted_sets = st.sampled_from([(), ("10.0.0.0/8",), ("10.0.0.0/8", "192.168.0.0/16"),
                                ("127.0.0.0/8", "::1/128"), ("fd00::/8", "10.0.0.0/8")])


@FUZZ
@given(header_lists, st.lists(connection_values(), max_size=2))
@example(headers=[("connection", "0"), ("0", "")], connection=[])  # found by CI once
def test_strip_hop_by_hop_removes_every_hop_and_every_named_header(headers, connection):
    given_headers = [*headers, *(("connection", value) for value in connection)]
    out = strip_hop_by_hop(given_headers)
    # Every Connection header counts, including any the generated list itself holds.
    named = [value for name, value in given_headers if name == "connection"]
    dropped = HOP_BY_HOP | connection_named(named)
    assert not {name for name, _ in out} & dropped
    # ... and keeps everything else, in order
    assert out == [(n, v) for n, v in given_headers if n not in dropped]


@FUZZ
@given(header_lists, st.lists(connection_values(), max_size=2), st.booleans(), addresses,
       st.one_of(st.none(), st.sampled_from(["6.6.6.6", "6.6.6.6, 7.7.7.7", "junk"])),
       st.sampled_from(["http", "https"]))
def test_upstream_headers_carry_exactly_the_gateways_own_values(headers, connection, clean,
                                                                 peer, xff, proto):
    given_headers = [*headers, *(("connection", value) for value in connection)]
    if clean:  # `clean` promises the caller already stripped hop-by-hop headers
        given_headers = strip_hop_by_hop(given_headers)
    out = upstream_request_headers(
        given_headers, host="backend.internal:9000", forwarded_for=xff, peer=peer,
        forwarded_host="tenant.example", proto=proto, client=peer, request_id="rid-1",
        clean=clean)
    out_names = [name for name, _ in out]
    for name in ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                 "forwarded", "x-request-id"):
        assert out_names.count(name) == 1, (name, out)
    got = dict(out)
    assert got["host"] == "backend.internal:9000"
    assert got["x-forwarded-for"].split(", ")[-1] == peer
    assert got["x-forwarded-proto"] == proto and got["x-request-id"] == "rid-1"
    assert got["x-forwarded-host"] == "tenant.example"
    assert not set(out_names) & (HOP_BY_HOP | {"content-length", "expect"})
    # Connection may name the gateway's own headers: they are removed, then added again.
    assert not set(out_names) & (connection_named(connection) - MANAGED_REQUEST)
    passed = [(n, v) for n, v in out if n not in MANAGED_REQUEST]
    expected = [(n, v) for n, v in strip_hop_by_hop(given_headers) if n not in MANAGED_REQUEST]
    assert passed == expected


@FUZZ
@given(addresses, chains, trusted_sets)
@example(peer="10.0.0.1", chain=["203.0.113.7:5555"], trusted=("10.0.0.0/8",))
@example(peer="10.0.0.1", chain=["198.51.100.7", "fe80::1%eth0"], trusted=("10.0.0.0/8",))
@example(peer="10.0.0.1", chain=["198.51.100.7", "[fd00::9]", "10.0.0.5:80"],
         trusted=("fd00::/8", "10.0.0.0/8"))
def test_the_client_ip_is_never_what_an_untrusted_peer_claims(peer, chain, trusted):
    networks = parse_networks(trusted)
    xff = [", ".join(chain)] if chain else []
    result = TrustedProxies(networks).client(peer, x_forwarded_for=xff)

    def address(entry: str):
        # An independent model of one entry: `a.b.c.d[:port]`, `v6`, `[v6][:port]`.
        bracketed = re.fullmatch(r"\[([^\]]*)\](?::(\d{1,5}))?", entry)
        if bracketed:
            host, port = bracketed.groups()
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, None
        if port is not None and not (port.isdigit() and int(port) <= 65535):
            return None
        if "%" in host:  # a zone id never leaves its host: not a client address
            return None
        try:
            parsed = ipaddress.ip_address(host)
        except ValueError:
            return None
        return getattr(parsed, "ipv4_mapped", None) or parsed

    def is_trusted(value) -> bool:
        return value is not None and any(value in n for n in networks)

    if not networks:
        assert result == peer  # nothing trusted: the peer, whatever it sent
        return
    peer_address = address(peer)
    if not is_trusted(peer_address):
        assert result == str(peer_address)  # an untrusted peer's X-Forwarded-For is not read
        return
    # Walk from the right: the first untrusted entry, stopping at junk.
    expected = peer_address
    for entry in reversed([e.strip() for e in chain]):
        entry_address = address(entry)
        if entry_address is None:
            break
        expected = entry_address
        if not is_trusted(entry_address):
            break
    assert ipaddress.ip_address(result) == expected


@FUZZ
@given(st.lists(st.tuples(names.map(str.encode), values.map(lambda v: v.encode("latin-1"))),
                max_size=12),
       st.lists(connection_values(), max_size=2), st.booleans(), st.booleans())
def test_downstream_headers_never_pass_hop_by_hop_or_broken_framing(raw, connection, te,
                                                                   bodiless):
    given_raw = [*raw, *((b"Connection", v.encode()) for v in connection)]
    if te:
        given_raw += [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")]
    out = downstream_headers(given_raw, request_id="rid-9", head_or_bodiless=bodiless)
    out_names = [name for name, _ in out]
    # A backend cannot remove the gateway's X-Request-ID by naming it in Connection.
    dropped = {n.encode() for n in HOP_BY_HOP | connection_named(connection)} - {b"x-request-id"}
    assert not set(out_names) & dropped
    assert out_names.count(b"x-request-id") == 1 and dict(out)[b"x-request-id"] == b"rid-9"
    if te and not bodiless:
        assert b"content-length" not in out_names  # the server frames the body itself
    assert all(name == name.lower() for name in out_names)


@FUZZ
@given(st.text(max_size=140))
def test_request_ids_are_accepted_only_when_plain(value):
    ok = valid_request_id(value)
    plain = 1 <= len(value) <= 128 and all(
        c.isascii() and (c.isalnum() or c in "._:-") for c in value)
    assert ok == plain


@FUZZ
@given(header_lists, st.lists(connection_values(), max_size=2),
       st.one_of(st.none(), st.sampled_from(["acme.example.com", "ACME.example.com.", "a b",
                                             "acme.example.com:8080", ":1", "x" * 300])),
       st.sampled_from(["/", "/a/b", "//evil", "/a/%2e%2e/b", "/a%2fb", "/a/./b", "x"]))
def test_parse_scope_accepts_or_refuses_and_never_leaks_hop_by_hop(headers, connection, host,
                                                                   path):
    scope = http_scope(path, host=host, headers=[
        *headers, *(("connection", value) for value in connection)])
    try:
        request = parse_scope(scope, get_conf())
    except GatewayError as error:
        assert 400 <= error.status < 500
        return
    names = {name for name, _ in request.headers}
    assert not names & (HOP_BY_HOP | connection_named(connection))
    assert request.host == request.host.lower() and not request.host.endswith(".")
    assert request.raw_path.startswith("/") and not request.raw_path.startswith("//")
    assert request.client_ip == "203.0.113.9"  # no trusted proxies: always the peer
    assert valid_request_id(request.request_id)
