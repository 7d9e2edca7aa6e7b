"""A tiny shared-memory slot per worker: its heartbeat and what script it is running.

The worker writes, the supervisor reads. Writes are a `struct.pack_into` on an mmap, cheap
enough for every request: the data plane marks the tenant script it is about to run, so when
the watchdog kills a worker whose event loop stopped answering, it knows which script
version blocked it.

Layout: a sequence number, then heartbeat (monotonic seconds, double), busy_since
(monotonic, 0 when idle), script version id (unsigned long long, 0 when none), tenant slug
(64 bytes).

The reader runs in another process while the worker writes, so a read must never mix two
writes. `struct.pack_into` zero-fills its target before writing the fields, and a read in that
window saw a heartbeat of 0.0 (the watchdog then killed a healthy worker). So the writer
packs off to the side and publishes with a sequence lock: the number is odd while a write is
in progress. A reader retries until it sees the same even number before and after its read.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

from chistone_site.conf import process_environment, variable

_SEQ = struct.Struct("<Q")
_BODY = struct.Struct("<ddQ64s")
SLOT_SIZE = _SEQ.size + _BODY.size
_READ_ATTEMPTS = 1000
ENV_VAR = variable("HEARTBEAT_SLOT")  # the supervisor names each worker's slot file in it


@dataclass(frozen=True, slots=True)
class SlotState:
    heartbeat: float
    busy_since: float
    version_id: int
    tenant: str


class Slot:
    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        if create:
            with open(path, "wb") as fh:
                fh.write(b"\0" * SLOT_SIZE)
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SLOT_SIZE)
        finally:
            os.close(fd)
        self._tenant = b""
        self._version = 0
        self._busy = 0.0
        self._seq = _SEQ.unpack_from(self._map, 0)[0] & ~1

    def beat(self) -> float:
        """Publish the current state with a new heartbeat; returns that heartbeat."""
        now = time.monotonic()
        body = _BODY.pack(now, self._busy, self._version, self._tenant)
        # Slice assignment copies bytes without zero-filling first (unlike pack_into).
        self._map[0:_SEQ.size] = _SEQ.pack(self._seq + 1)
        self._map[_SEQ.size:SLOT_SIZE] = body
        self._seq += 2
        self._map[0:_SEQ.size] = _SEQ.pack(self._seq)
        return now

    def enter(self, tenant: str, version_id: int) -> None:
        self._busy = time.monotonic()
        self._tenant = tenant.encode()[:64]
        self._version = version_id
        self.beat()

    def leave(self) -> None:
        self._busy = 0.0
        self._tenant = b""
        self._version = 0
        self.beat()

    def read(self) -> SlotState | None:
        """The last complete write, or None when the writer was in the middle of a write on
        every attempt. A worker that busy is running its event loop, not hung, so callers
        take None as a sign of life; they never see a half-written state (returning the last
        attempt as read once gave the supervisor a tenant from one write and a version from
        another)."""
        for _ in range(_READ_ATTEMPTS):
            before = _SEQ.unpack_from(self._map, 0)[0]
            fields = _BODY.unpack_from(self._map, _SEQ.size)
            if not before & 1 and _SEQ.unpack_from(self._map, 0)[0] == before:
                heartbeat, busy, version, tenant = fields
                return SlotState(heartbeat, busy, version,
                                 tenant.rstrip(b"\0").decode(errors="replace"))
        return None

    def close(self) -> None:
        self._map.close()


_slot_path = process_environment().heartbeat_slot
_current: Slot | None = Slot(_slot_path) if _slot_path else None


def current() -> Slot | None:
    """The slot of this worker process, or None when not running under the supervisor."""
    return _current


def enter_script(tenant: str, version_id: int) -> None:
    if _current is not None:
        _current.enter(tenant, version_id)


def leave_script() -> None:
    if _current is not None:
        _current.leave()
