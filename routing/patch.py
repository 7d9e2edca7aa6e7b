"""Applying what middleware changed on a response (a `ResponsePatch`) to the final answer.

One implementation for every kind of answer: a proxied response while it is relayed, a
script's respond(), a reject or a gateway error, and the dry run's simulated answer. A header
set by the script replaces every header of that name; a removed one drops them all. Framing
and identity stay the gateway's: hop-by-hop headers, Content-Length and X-Request-Id are
never taken from a patch, and a replaced body gets its own Content-Length.
"""

from __future__ import annotations

from luascripts.engine.results import raw_changes
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
    raw = patch.raw
    if raw is None:
        raw = raw_changes(patch.headers)
    if body_length is None and not raw:
        return headers
    changed = {key: value for key, value in raw.items() if key not in _GATEWAY_OWNED}
    if body_length is not None:
        changed[b"content-length"] = str(body_length).encode()
        changed[b"transfer-encoding"] = None
    if not changed:
        return headers
    out = [(name, value) for name, value in headers if name not in changed]
    out.extend((name, value) for name, value in changed.items() if value is not None)
    return out


def frame_answer(status: int, headers: RawHeaders, body: bytes, request_id: str,
                 patch: ResponsePatch | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A complete answer the gateway gives itself (a respond(), a reject, an error), with the
    patch applied: its framing (Content-Length, none for 204/304) and X-Request-Id are ours."""
    out = [(name, value) for name, value in headers
           if name not in (b"content-length", b"x-request-id")]
    if patch is not None:
        status = patch_status(status, patch)
        if patch.body is not None:
            body = patch.body
        out = patch_headers(out, patch)
    if status in (204, 304):
        body = b""
    else:
        out.append((b"content-length", str(len(body)).encode()))
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return status, out, body
