"""Who the client is behind trusted proxies: the one implementation both planes use.

The data plane (routing.request) and the control plane (login throttling and the secure-scheme
middleware in chistone_site.trusted_proxies) ask the same `TrustedProxies` object, so the
address a request is logged under, passed to a script and counted against for failed logins
is the same.

Rules (docs/data-plane.md, "Client address"):

- Only a TCP peer inside CHISTONE_TRUSTED_PROXIES is believed at all. Without trusted
  proxies (the default) the client is the peer, whatever headers it sent.
- One header is honoured, the one the proxies are declared to write
  (CHISTONE_FORWARDED_HEADER): `x-forwarded-for` (the default) or `forwarded` (RFC 7239).
  The other is ignored: a proxy that writes one usually passes the other through untouched,
  so believing both would let a client choose its own address.
- The list is walked from the right (the entry the nearest proxy appended) while the
  addresses are trusted proxies; the first address that is not one is the client.
- Entries may carry a port (`203.0.113.7:5555`, `[2001:db8::7]:443`), brackets and quotes;
  IPv4-mapped IPv6 addresses count as their IPv4 address.
- An entry that is not an address (`unknown`, an obfuscated `_node`, garbage) ends the walk:
  the client is the last trusted proxy, the last address known for sure. A client can never
  make itself look like someone else by sending garbage.
- The scheme (`https`) comes from X-Forwarded-Proto, or from the `proto` parameter of the
  last Forwarded element, and only from a trusted peer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HEADERS = ("x-forwarded-for", "forwarded")

# One `forwarded-pair` of RFC 7239: token "=" (token / quoted-string).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*')
_SCHEMES = frozenset({"http", "https"})


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) as networks; ValueError names the first bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (use CIDR such as 10.0.0.0/8)") \
                from None
    return tuple(networks)


def parse_address(value: str) -> IPAddress | None:
    """An address from one list entry: `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]`, `[v6]:port`,
    optionally in double quotes. None for anything else."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not _is_port(value[end + 1:])):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has two or more
        value, port = value.split(":")
        if not _is_port(":" + port):
            return None
    if not value or len(value) > 45 or "%" in value:  # no zone ids: they never leave a host
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return len(text) > 1 and text[0] == ":" and text[1:].isascii() and text[1:].isdigit() \
        and len(text) <= 6 and int(text[1:]) <= 65535


def x_forwarded_for_entries(values: Iterable[str]) -> list[str]:
    """The entries of one or more X-Forwarded-For headers, in order (empty ones kept)."""
    return [item for value in values for item in value.split(",")]


def forwarded_elements(values: Iterable[str]) -> list[dict[str, str] | None]:
    """The elements of one or more Forwarded headers, in order, as {parameter: value}.

    Parameter names are lower-case, quoted values unquoted. An element that does not parse is
    None (it ends a walk there), so garbage cannot shift the others.
    """
    elements: list[dict[str, str] | None] = []
    for value in values:
        for raw in _split_outside_quotes(value, ","):
            params: dict[str, str] | None = {}
            for pair in _split_outside_quotes(raw, ";"):
                if not pair.strip():
                    continue
                match = _PAIR.fullmatch(pair)
                if match is None:
                    params = None
                    break
                name, item = match.group(1).lower(), match.group(2)
                if item.startswith('"'):
                    item = re.sub(r"\\(.)", r"\1", item[1:-1])
                if name in params:  # RFC 7239 section 4: a parameter at most once
                    params = None
                    break
                params[name] = item
            elements.append(params or None)
    return elements


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The proxies in front of chistone and the header they write; see the module docstring."""

    networks: tuple[IPNetwork, ...] = ()
    header: str = "x-forwarded-for"

    def __post_init__(self) -> None:
        if self.header not in HEADERS:
            raise ValueError(f"the forwarded header must be one of {HEADERS}, not "
                             f"{self.header!r}")

    def trusts(self, peer: str | IPAddress | None) -> bool:
        if not self.networks or peer is None:
            return False
        address = parse_address(peer) if isinstance(peer, str) else peer
        return address is not None and any(address in net for net in self.networks)

    def client(self, peer: str, *, x_forwarded_for: Iterable[str] = (),
               forwarded: Iterable[str] = ()) -> str:
        """The client address of a request that came from `peer` with these header values.

        A peer that is not an IP address (a Unix socket, a test client) is returned as given,
        and so is every peer when no proxy is trusted (the common case costs nothing).
        """
        if not self.networks:
            return peer
        peer_address = parse_address(peer)
        if peer_address is None:
            return peer
        if not self.trusts(peer_address):
            return str(peer_address)
        if self.header == "forwarded":
            chain = [element.get("for") if element else None
                     for element in forwarded_elements(forwarded)]
        else:
            chain = x_forwarded_for_entries(x_forwarded_for)
        last = peer_address
        for entry in reversed(chain):
            address = parse_address(entry) if entry is not None else None
            if address is None:
                break  # unknown, obfuscated or garbage: `last` wrote it, and is known
            if not self.trusts(address):
                return str(address)
            last = address
        return str(last)

    def scheme(self, peer: str, transport_scheme: str, *, x_forwarded_proto: str | None = None,
               forwarded: Iterable[str] = ()) -> str:
        """`http` or `https` as the client used it: the nearest trusted proxy's word, else the
        scheme of the connection itself."""
        if not self.trusts(peer):
            return transport_scheme
        if self.header == "forwarded":
            elements = forwarded_elements(forwarded)
            claimed = (elements[-1] or {}).get("proto", "") if elements else ""
        else:
            claimed = x_forwarded_proto or ""
        claimed = claimed.strip().lower()
        return claimed if claimed in _SCHEMES else transport_scheme
