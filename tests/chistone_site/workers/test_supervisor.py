"""The watchdog's decision, in-process: kill only a hang seen on two consecutive checks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from chistone_site.workers import heartbeat
from chistone_site.workers.supervisor import Supervisor, Worker


@pytest.fixture
def watched(tmp_path):
    """A supervisor watching one stand-in worker (a sleeping process) with a real slot."""
    faults: list[tuple[str, int, int]] = []
    supervisor = Supervisor(listeners=[], workers=1, hang_timeout=0.05, startup_grace=0,
                            on_fault=lambda *args: faults.append(args))
    spawned: list[int] = []
    supervisor._spawn = lambda index: spawned.append(index)  # no real worker in a unit test
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    slot = heartbeat.Slot(str(tmp_path / "slot"), create=True)
    slot.beat()
    worker = Worker(index=0, process=process, slot=slot, spawn_beat=-1.0)
    supervisor.workers[0] = worker
    yield supervisor, worker, spawned, faults
    process.kill()
    process.wait()
    slot.close()


def test_a_single_stale_reading_is_not_a_hang(watched):
    supervisor, worker, spawned, _ = watched
    time.sleep(0.1)  # the heartbeat is now older than the bound
    supervisor.check()
    assert worker.process.poll() is None and spawned == []
    worker.slot.beat()  # the worker was fine after all
    supervisor.check()
    assert worker.stale_checks == 0
    time.sleep(0.1)
    supervisor.check()
    assert worker.process.poll() is None and spawned == []


def test_a_confirmed_hang_inside_a_script_kills_replaces_and_reports_the_version(watched):
    supervisor, worker, spawned, faults = watched
    worker.slot.enter("acme", 7)
    time.sleep(0.1)
    supervisor.check()
    supervisor.check()
    assert worker.process.wait(5) != 0
    assert spawned == [0]
    assert faults == [("acme", 7, worker.process.pid)]


def test_a_worker_writing_on_every_read_is_alive(watched, monkeypatch):
    supervisor, worker, spawned, _ = watched
    time.sleep(0.1)  # the last complete beat is older than the bound...
    monkeypatch.setattr(worker.slot, "read", lambda: None)  # ...but a write is always underway
    for _ in range(3):
        supervisor.check()
    assert worker.process.poll() is None and spawned == [] and worker.stale_checks == 0
