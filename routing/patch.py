"""Applying what middleware changed on a response (a `ResponsePatch`) to the final answer.

One implementation for every kind of answer: a proxied response while it is relayed, a
script's respond(), a reject or a gateway error, and the dry run's simulated answer. A header
set by the script replaces every header of that name; a removed one drops them all. Framing
and identity stay the gateway's: hop-by-hop headers, Content-Length and X-Request-Id are
never taken from a patch, and a replaced body gets its own Content-Length.
"""

from __future__ import annotations

from luascripts.engine.types import ResponsePatch
from routing.headers import HOP_BY_HOP
from routing.types import RawHeaders

_GATEWAY_OWNED = frozenset(name.encode() for name in HOP_BY_HOP) | {
    b"content-length", b"x-request-id"}


def patch_status(status: int, patch: ResponsePatch | None) -> int:
    if patch is None or patch.status is None:
        return status
    return patch.status


def patch_headers(headers: RawHeaders, patch: ResponsePatch | None, *,
                  body_length: int | None = None) -> RawHeaders:
    """`headers` (lower-case byte names) with the patch's changes; when the body is replaced,
    `body_length` sets Content-Length (and Transfer-Encoding goes)."""
    if patch is None:
        return headers
    changed: dict[bytes, bytes | None] = {}
    for name, value in patch.headers:
        key = name.lower().encode("latin-1")
        if key in _GATEWAY_OWNED:
            continue
        changed[key] = None if value is None else value.encode("latin-1")
    if body_length is not None:
        changed[b"content-length"] = str(body_length).encode()
        changed[b"transfer-encoding"] = None
    if not changed:
        return headers
    out = [(name, value) for name, value in headers if name not in changed]
    out.extend((name, value) for name, value in changed.items() if value is not None)
    return out
