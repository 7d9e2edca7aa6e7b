"""Which version answers a request while a rollout runs: a stable, sticky split.

A running rollout gives its version `percent` of a tenant's requests. The request's key (a
header's value when the rollout names one and the request carries it, else the client's
IP) is hashed with BLAKE2b, keyed by the tenant and the rollout, into one of 10,000
buckets; the new version answers when the bucket is below percent x 100. The hash is the
same in every process (not Python's randomised `hash`), so every worker on every node sends
a key to the same version, a key keeps its version for the whole rollout, and raising the
percentage only moves keys onto the new version. The cost is paid only by tenants with a
rollout running: one header scan and one short hash per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.request import ClientRequest

BUCKETS = 10_000


def bucket(salt: bytes, key: str) -> int:
    """The key's bucket, 0 to BUCKETS - 1, the same in every process."""
    digest = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def salt_for(tenant: str, rollout_id: int) -> bytes:
    return f"chistone-rollout:{tenant}:{rollout_id}".encode()[:64]


@dataclass(frozen=True, slots=True)
class RolloutEntry:
    """A running rollout as the data plane serves it (routing.snapshot builds it)."""

    id: int
    script: Any  # the new version's LoadedScript
    version_id: int
    version_number: int
    percent: int
    key_header: str  # lower-case header name; "" = the client's IP
    salt: bytes
    config_header: tuple[bytes, bytes]  # X-Chistone-Config when the new version answers

    def key_of(self, request: ClientRequest) -> str:
        name = self.key_header
        if name:
            for header, value in request.headers:
                if header == name:
                    return value
        return request.client_ip

    def takes(self, request: ClientRequest) -> bool:
        """True when the new version answers this request."""
        return bucket(self.salt, self.key_of(request)) < self.percent * (BUCKETS // 100)
