"""Header rules of the proxy hop: hop-by-hop removal and the forwarding headers.

Order matters (proxy-security.md): every header named in `Connection` and the fixed
hop-by-hop set are removed first, then the gateway adds its own headers, so a client cannot
send `Connection: X-Forwarded-For` to delete them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from routing.errors import InvalidResponse
from routing.types import RawHeaders

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "proxy-authenticate",
})
# Headers the gateway computes itself towards the backend: whatever the client (or a script)
# sent under these names is dropped before the gateway's own values are added.
MANAGED_REQUEST = frozenset({
    "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
    "x-request-id", "content-length", "expect",
})
_DROP_DOWN = frozenset(name.encode() for name in HOP_BY_HOP) | {b"x-request-id"}
_TOKEN_SPLIT = re.compile(r"[,\s]+")

# RFC 9110 5.1 and 5.5: a field name is a token; a field value holds no control character
# other than HTAB (obs-text, 0x80-0xFF, is opaque data and allowed). Both directions are
# checked: a request header that breaks these rules is refused (400) before anything else
# sees it, a response header that breaks them makes the answer unframeable (502), and a
# script cannot set one either. HTTP clients and servers (aiohttp, Twisted) either raise on
# such bytes or pass them on to the next hop, where they are an injection or a desync.
_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_TOKEN_RE_B = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD_CONTROL_B = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Names already seen to be tokens: the same few dozen names come again and again.
_KNOWN_NAMES: set[str] = set()
_KNOWN_NAMES_B: set[bytes] = set()
_KNOWN_NAMES_MAX = 4096


def connection_named(values: Iterable[str]) -> set[str]:
    """Header names listed in `Connection` values (lower-case)."""
    names: set[str] = set()
    for value in values:
        names.update(token for token in _TOKEN_SPLIT.split(value.lower()) if token)
    return names


def strip_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop the hop-by-hop set and every header `Connection` names. Names must be lower-case."""
    named = [value for name, value in headers if name == "connection"]
    drop = HOP_BY_HOP | connection_named(named) if named else HOP_BY_HOP
    return [(name, value) for name, value in headers if name not in drop]


def strip_hop_by_hop_raw(headers: RawHeaders) -> RawHeaders:
    """The same for byte pairs with names in any case (a backend's response headers)."""
    named: list[str] = []
    for name, value in headers:
        if name.lower() == b"connection":
            named.append(value.decode("latin-1"))
    drop = HOP_BY_HOP | connection_named(named) if named else HOP_BY_HOP
    return [(name, value) for name, value in headers if name.decode("latin-1").lower() not in drop]


def is_field_name(name: str) -> bool:
    """True for a valid header name (an RFC 9110 token)."""
    if name in _KNOWN_NAMES:
        return True
    if _TOKEN_RE.fullmatch(name) is None:
        return False
    if len(_KNOWN_NAMES) < _KNOWN_NAMES_MAX:
        _KNOWN_NAMES.add(name)
    return True


def is_field_value(value: str) -> bool:
    """True for a header value without control characters (HTAB and obs-text allowed)."""
    # isprintable() is one fast C pass for the common case; it also says False for HTAB and
    # some latin-1 characters, which the exact check then allows.
    return value.isprintable() or _FIELD_CONTROL.search(value) is None


def is_field_name_bytes(name: bytes) -> bool:
    if name in _KNOWN_NAMES_B:
        return True
    if _TOKEN_RE_B.fullmatch(name) is None:
        return False
    if len(_KNOWN_NAMES_B) < _KNOWN_NAMES_MAX:
        _KNOWN_NAMES_B.add(name)
    return True


def is_field_value_bytes(value: bytes) -> bool:
    return _FIELD_CONTROL_B.search(value) is None


def upstream_request_headers(
    headers: Iterable[tuple[str, str]],
    *,
    host: str,
    forwarded_for: str | None,
    peer: str,
    forwarded_host: str,
    proto: str,
    client: str,
    request_id: str,
    clean: bool = False,
) -> list[tuple[str, str]]:
    """The backend's request headers: the given ones minus hop-by-hop and managed, plus ours.

    `headers` are lower-case (name, value) pairs; hop-by-hop ones named in `Connection` are
    removed here again, so a script that set `connection` cannot smuggle one through
    (`clean=True`: they are the client's, already stripped by routing.request).
    """
    source = headers if clean else strip_hop_by_hop(list(headers))
    out = [(name, value) for name, value in source if name not in MANAGED_REQUEST]
    node = f"[{client}]" if ":" in client else client
    out.append(("host", host))
    out.append(("x-forwarded-for", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    out.append(("x-forwarded-proto", proto))
    out.append(("x-forwarded-host", forwarded_host))
    out.append(("forwarded", f'for="{node}";host="{forwarded_host}";proto={proto}'))
    out.append(("x-request-id", request_id))
    return out


def downstream_headers(
    raw: Iterable[tuple[bytes, bytes]], *, request_id: str, head_or_bodiless: bool = False
) -> RawHeaders:
    """The client's response headers from a backend's: hop-by-hop removed, framing redone.

    A backend answer with Transfer-Encoding (possibly together with Content-Length, which
    would desynchronise the client) loses both; the server then frames the body itself.
    Content-Length is kept only when the bytes pass unchanged and no Transfer-Encoding came.
    Repeated headers (Set-Cookie) keep their order. A header whose name is not a token or
    whose value holds a control character cannot be passed on safely (the client's parser
    may split or merge it differently): `InvalidResponse` (502), never a relayed answer.
    """
    out: RawHeaders = []
    named: set[bytes] | None = None
    had_te = False
    for name, value in raw:  # one pass in the common case: runs for every proxied answer
        lower = name.lower()
        if not is_field_name_bytes(lower):
            raise InvalidResponse("The backend sent a response header whose name is not a "
                                  "valid HTTP token.")
        if _FIELD_CONTROL_B.search(value) is not None:
            raise InvalidResponse(f"The backend sent a control character in the response "
                                  f"header {lower.decode('latin-1')!r}.")
        if lower in _DROP_DOWN:
            if lower == b"connection":
                named = set() if named is None else named
                named.update(_connection_tokens(value))
            elif lower == b"transfer-encoding":
                had_te = True
            continue
        out.append((lower, value))
    if named:
        out = [header for header in out if header[0] not in named]
    if had_te and not head_or_bodiless:
        out = [header for header in out if header[0] != b"content-length"]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return out


@lru_cache(maxsize=256)  # backends send the same few values ("keep-alive", "close")
def _connection_tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(token.encode("latin-1")
                     for token in connection_named([value.decode("latin-1")]))
