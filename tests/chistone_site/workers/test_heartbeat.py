"""The heartbeat slot: what the supervisor reads is always a state the worker wrote."""

from __future__ import annotations

import subprocess
import sys
import time

from chistone_site.workers import heartbeat

WRITER = """
import sys, time
from chistone_site.workers.heartbeat import Slot
slot = Slot(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:  # what a busy worker does: enter and leave per request
    slot.enter("acme", 7)
    slot.leave()
"""


def test_a_fresh_slot_reads_back_what_was_written(tmp_path):
    slot = heartbeat.Slot(str(tmp_path / "slot"), create=True)
    try:
        assert slot.read().heartbeat == 0.0
        slot.enter("acme", 7)
        state = slot.read()
        assert (state.tenant, state.version_id) == ("acme", 7)
        assert 0 < state.busy_since <= state.heartbeat <= time.monotonic()
        slot.leave()
        state = slot.read()
        assert (state.tenant, state.version_id, state.busy_since) == ("", 0, 0.0)
    finally:
        slot.close()


def test_reads_never_see_a_half_written_state(tmp_path):
    # A worker beats twice per request; the supervisor reads concurrently. A torn read once
    # showed a heartbeat of 0.0, and the watchdog killed a healthy worker mid-benchmark for
    # "not answering for 2576 s".
    path = str(tmp_path / "slot")
    slot = heartbeat.Slot(path, create=True)
    slot.beat()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, "3"])
    bad: list[heartbeat.SlotState] = []
    reads = busy_every_attempt = 0
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and writer.poll() is None:
            state = slot.read()
            reads += 1
            if state is None:  # the writer was mid-write on every attempt: no reading
                busy_every_attempt += 1
                continue
            busy = (state.busy_since > 0, state.tenant, state.version_id)
            if state.heartbeat <= 0 or busy not in ((True, "acme", 7), (False, "", 0)):
                bad.append(state)
    finally:
        writer.kill()
        writer.wait()
        slot.close()
    assert reads > 10_000
    # A writer in a tight loop (far busier than a real worker) rarely defeats every attempt.
    assert busy_every_attempt < reads // 1000, (busy_every_attempt, reads)
    assert bad == [], f"{len(bad)} torn reads in {reads}, e.g. {bad[:3]}"


def test_a_read_during_endless_writes_is_none_never_a_mix(tmp_path):
    slot = heartbeat.Slot(str(tmp_path / "slot"), create=True)
    try:
        slot.enter("acme", 7)
        # Freeze the slot mid-write, as a reader would find it on every attempt.
        slot._map[0:8] = (slot._seq + 1).to_bytes(8, "little")
        assert slot.read() is None
    finally:
        slot.close()
