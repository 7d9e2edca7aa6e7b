"""A tiny shared-memory slot per worker: its heartbeat and what script it is running.

The worker writes, the supervisor reads. Writes are a `struct.pack_into` on an mmap, cheap
enough for every request: the data plane marks the tenant script it is about to run, so when
the watchdog kills a worker whose event loop stopped answering, it knows which script
version blocked it.

Layout: heartbeat (monotonic seconds, double), busy_since (monotonic, 0 when idle),
script version id (unsigned long long, 0 when none), tenant slug (64 bytes).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

_FORMAT = struct.Struct("<ddQ64s")
SLOT_SIZE = _FORMAT.size
ENV_VAR = "CHISTONE_HEARTBEAT_SLOT"


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

    def beat(self) -> None:
        _FORMAT.pack_into(self._map, 0, time.monotonic(), self._busy, self._version, self._tenant)

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

    def read(self) -> SlotState:
        heartbeat, busy, version, tenant = _FORMAT.unpack_from(self._map, 0)
        return SlotState(heartbeat, busy, version, tenant.rstrip(b"\0").decode(errors="replace"))

    def close(self) -> None:
        self._map.close()


_current: Slot | None = Slot(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None


def current() -> Slot | None:
    """The slot of this worker process, or None when not running under the supervisor."""
    return _current


def enter_script(tenant: str, version_id: int) -> None:
    if _current is not None:
        _current.enter(tenant, version_id)


def leave_script() -> None:
    if _current is not None:
        _current.leave()
