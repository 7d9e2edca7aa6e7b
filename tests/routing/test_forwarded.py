"""routing.forwarded: the client address and scheme behind trusted proxies (both planes)."""

from __future__ import annotations

import ipaddress

import pytest

from routing.forwarded import (
    TrustedProxies,
    forwarded_elements,
    parse_address,
    parse_networks,
)

XFF = TrustedProxies(parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"]))
FWD = TrustedProxies(XFF.networks, "forwarded")


@pytest.mark.parametrize("entry,expected", [
    ("203.0.113.7", "203.0.113.7"),
    (" 203.0.113.7 ", "203.0.113.7"),
    ("203.0.113.7:5555", "203.0.113.7"),
    ("2001:db8::7", "2001:db8::7"),
    ("[2001:db8::7]", "2001:db8::7"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    ('"[2001:db8::7]:443"', "2001:db8::7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped counts as IPv4
    ("203.0.113.7:99999", None),
    ("203.0.113.7:", None),
    ("203.0.113.7:x", None),
    ("[2001:db8::7]x", None),
    ("[2001:db8::7", None),
    ("fe80::1%eth0", None),
    ("unknown", None),
    ("_hidden", None),
    ("", None),
    ("1.2.3.4.5", None),
    ("a" * 200, None),
])
def test_parse_address(entry, expected):
    address = parse_address(entry)
    assert (str(address) if address is not None else None) == expected


def test_parse_networks_names_the_bad_entry():
    assert parse_networks(["10.0.0.0/8", "192.0.2.7"])[1] == ipaddress.ip_network("192.0.2.7/32")
    with pytest.raises(ValueError, match="'not-a-net' is not an IP network"):
        parse_networks(["10.0.0.0/8", "not-a-net"])


# -- X-Forwarded-For ----------------------------------------------------------------------


@pytest.mark.parametrize("peer,xff,expected", [
    # the case: a port on the client entry, from a trusted proxy
    ("10.0.0.2", "203.0.113.7:5555", "203.0.113.7"),
    ("10.0.0.2", "203.0.113.7", "203.0.113.7"),
    ("10.0.0.2", "[2001:db8::7]:443", "2001:db8::7"),
    ("10.0.0.2", "2001:db8::7", "2001:db8::7"),
    # rightmost untrusted wins; what the client wrote on the left is not believed
    ("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
    ("10.0.0.2", "6.6.6.6, 198.51.100.7:80, [2001:db8:ffff::1]:8080", "198.51.100.7"),
    # all trusted: the farthest trusted proxy is the best we know
    ("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),
    ("10.0.0.1", "", "10.0.0.1"),
    # garbage stops the walk at the trusted proxy that wrote it
    ("10.0.0.1", "garbage, 10.0.0.3", "10.0.0.3"),
    ("10.0.0.1", "198.51.100.7, unknown", "10.0.0.1"),
    ("10.0.0.1", "198.51.100.7,, 10.0.0.3", "10.0.0.3"),
    ("10.0.0.1", "198.51.100.7:99999", "10.0.0.1"),
    # a peer outside the trusted networks: its headers mean nothing
    ("203.0.113.9", "1.1.1.1", "203.0.113.9"),
    ("::ffff:10.0.0.2", "203.0.113.7", "203.0.113.7"),
])
def test_x_forwarded_for(peer, xff, expected):
    assert XFF.client(peer, x_forwarded_for=[xff]) == expected


def test_several_x_forwarded_for_headers_are_one_list():
    assert XFF.client("10.0.0.2", x_forwarded_for=["198.51.100.7", "10.0.0.3"]) == "198.51.100.7"
    assert XFF.client("10.0.0.2", x_forwarded_for=["198.51.100.7", "203.0.113.5, 10.0.0.3"]) \
        == "203.0.113.5"


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_sends():
    nobody = TrustedProxies()
    assert nobody.client("203.0.113.9", x_forwarded_for=["1.1.1.1"],
                         forwarded=["for=1.1.1.1"]) == "203.0.113.9"
    assert nobody.scheme("203.0.113.9", "http", x_forwarded_proto="https") == "http"


def test_a_peer_that_is_not_an_address_is_returned_as_given():
    assert XFF.client("unix-socket", x_forwarded_for=["1.2.3.4"]) == "unix-socket"


def test_in_x_forwarded_for_mode_forwarded_is_ignored():
    # A proxy writing X-Forwarded-For passes the client's own Forwarded header through.
    assert XFF.client("10.0.0.2", x_forwarded_for=["198.51.100.7"],
                      forwarded=["for=1.1.1.1"]) == "198.51.100.7"
    assert XFF.client("10.0.0.2", forwarded=["for=1.1.1.1"]) == "10.0.0.2"


# -- Forwarded (RFC 7239) -------------------------------------------------------------------


def test_forwarded_elements_parse_rfc_7239_examples():
    assert forwarded_elements(['for="_gazonk"']) == [{"for": "_gazonk"}]
    assert forwarded_elements(['For="[2001:db8:cafe::17]:4711"']) == \
        [{"for": "[2001:db8:cafe::17]:4711"}]
    assert forwarded_elements(["for=192.0.2.60;proto=http;by=203.0.113.43"]) == \
        [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]
    assert forwarded_elements(["for=192.0.2.43, for=198.51.100.17"]) == \
        [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]
    # a comma inside a quoted value does not split elements; escapes are undone
    assert forwarded_elements(['for="a,b";host="x\\"y", for=1.2.3.4']) == \
        [{"for": "a,b", "host": 'x"y'}, {"for": "1.2.3.4"}]


def test_forwarded_elements_mark_garbage_without_shifting_the_rest():
    assert forwarded_elements(["for=1.2.3.4, nonsense, for=5.6.7.8"]) == \
        [{"for": "1.2.3.4"}, None, {"for": "5.6.7.8"}]
    assert forwarded_elements(["for=1.2.3.4;for=5.6.7.8"]) == [None]  # a parameter twice
    assert forwarded_elements(['for="unterminated']) == [None]
    assert forwarded_elements([""]) == [None]


@pytest.mark.parametrize("peer,forwarded,expected", [
    ("10.0.0.2", "for=203.0.113.7", "203.0.113.7"),
    ("10.0.0.2", 'for="203.0.113.7:5555"', "203.0.113.7"),
    ("10.0.0.2", 'for="[2001:db8::7]:4711";proto=https', "2001:db8::7"),
    ("10.0.0.2", "for=6.6.6.6, for=198.51.100.7, for=10.0.0.9", "198.51.100.7"),
    ("10.0.0.2", 'for=198.51.100.7;by=10.0.0.2, for="[2001:db8:ffff::3]"', "198.51.100.7"),
    ("10.0.0.2", "for=198.51.100.7, for=unknown", "10.0.0.2"),
    ("10.0.0.2", "for=198.51.100.7, for=_hidden, for=10.0.0.3", "10.0.0.3"),
    ("10.0.0.2", "for=198.51.100.7, garbage;;=, for=10.0.0.3", "10.0.0.3"),
    ("10.0.0.2", "proto=https", "10.0.0.2"),  # an element without `for`
    ("203.0.113.9", "for=1.1.1.1", "203.0.113.9"),
])
def test_forwarded(peer, forwarded, expected):
    assert FWD.client(peer, forwarded=[forwarded]) == expected


def test_in_forwarded_mode_x_forwarded_for_is_ignored():
    assert FWD.client("10.0.0.2", x_forwarded_for=["1.1.1.1"],
                      forwarded=["for=198.51.100.7"]) == "198.51.100.7"
    assert FWD.client("10.0.0.2", x_forwarded_for=["1.1.1.1"]) == "10.0.0.2"


# -- scheme -----------------------------------------------------------------------------------


def test_scheme_from_a_trusted_proxy_only():
    assert XFF.scheme("10.0.0.2", "http", x_forwarded_proto="https") == "https"
    assert XFF.scheme("10.0.0.2", "http", x_forwarded_proto=" HTTPS ") == "https"
    assert XFF.scheme("203.0.113.9", "http", x_forwarded_proto="https") == "http"
    assert XFF.scheme("10.0.0.2", "http", x_forwarded_proto="https, http") == "http"
    assert XFF.scheme("10.0.0.2", "http", x_forwarded_proto="gopher") == "http"
    assert XFF.scheme("10.0.0.2", "https") == "https"
    # Forwarded mode: the proto of the last element, the one the nearest proxy wrote
    assert FWD.scheme("10.0.0.2", "http", forwarded=["for=1.2.3.4;proto=http, "
                                                     "for=5.6.7.8;proto=https"]) == "https"
    assert FWD.scheme("10.0.0.2", "http", x_forwarded_proto="https") == "http"
    assert FWD.scheme("10.0.0.2", "http", forwarded=["for=1.2.3.4;proto=https, x"]) == "http"


def test_an_unknown_header_mode_is_refused():
    with pytest.raises(ValueError, match="forwarded header"):
        TrustedProxies((), "x-real-ip")
