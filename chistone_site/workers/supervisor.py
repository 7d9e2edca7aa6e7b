"""The supervisor: keeps N workers serving on listening sockets it opened once.

- Each worker slot is handed its sockets (chistone_site.workers.listeners: one SO_REUSEPORT
  socket per slot, or one socket shared by all). A worker that exits is replaced on the same
  sockets; the others keep serving.
- Watchdog: a worker whose heartbeat is older than `hang_timeout` has a blocked event loop; it
  is killed and replaced, and if it was inside a tenant script at the time, `on_fault` is told
  which script version blocked it (the serve command marks that version faulty).
- SIGTERM/SIGINT: every worker drains (stops accepting, finishes in-flight requests), then the
  supervisor exits. SIGHUP: workers are replaced one by one, each new one started before the
  old one drains, so the listeners never go quiet.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chistone_site.workers import heartbeat
from chistone_site.workers.listeners import Listener

log = logging.getLogger("chistone.supervisor")

CONFIRM_CHECKS = 2
FaultHandler = Callable[[str, int, int], None]  # (tenant slug, version id, worker pid)


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    slot: heartbeat.Slot
    started: float = field(default_factory=time.monotonic)
    spawn_beat: float = 0.0  # the beat the supervisor wrote; the worker's own ones are later
    stale_checks: int = 0  # consecutive checks that found the heartbeat too old


class Supervisor:
    def __init__(
        self,
        *,
        listeners: list[Listener],
        workers: int,
        server: str = "daphne",
        hang_timeout: float = 5.0,
        startup_grace: float = 30.0,
        on_fault: FaultHandler | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.listeners = listeners
        self.count = workers
        self.server = server
        self.hang_timeout = hang_timeout
        self.startup_grace = startup_grace
        self.on_fault = on_fault
        self.env = {**os.environ, **(env or {})}
        self.workers: dict[int, Worker] = {}
        self.slot_dir = tempfile.mkdtemp(prefix="chistone-slots-")
        self._stopping = False
        self._reload = False

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, index: int) -> Worker:
        path = os.path.join(self.slot_dir, f"worker-{index}-{time.monotonic_ns()}")
        slot = heartbeat.Slot(path, create=True)
        spawn_beat = slot.beat()  # a fresh worker gets the startup grace, measured from now
        sockets = [listener.for_slot(index) for listener in self.listeners]
        argv = [sys.executable, "-m", "chistone_site.workers.worker", "--server", self.server,
                "--fds", ",".join(str(s.fileno()) for s in sockets)]
        if any(len(listener.sockets) == 1 for listener in self.listeners) and self.count > 1:
            argv.append("--shared-socket")
        env = {**self.env, heartbeat.ENV_VAR: path}
        process = subprocess.Popen(argv, pass_fds=[s.fileno() for s in sockets], env=env)
        log.info("started worker %d (pid %d, %s)", index, process.pid, self.server)
        worker = Worker(index=index, process=process, slot=slot, spawn_beat=spawn_beat)
        self.workers[index] = worker
        return worker

    def _retire(self, worker: Worker, *, sig: int = signal.SIGTERM, wait: float = 25.0) -> None:
        if worker.process.poll() is None:
            worker.process.send_signal(sig)
            try:
                worker.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        worker.slot.close()
        try:
            os.unlink(worker.slot.path)
        except FileNotFoundError:
            pass

    # -- the watchdog ------------------------------------------------------------------------
    def check(self) -> None:
        """One supervision round: replace dead workers and kill hung ones."""
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is not None:
                log.warning("worker %d (pid %d) exited with %s; replacing it",
                            index, worker.process.pid, code)
                self._retire(worker)
                self._spawn(index)
                continue
            state = worker.slot.read()
            if state is None:  # the worker was writing on every attempt: it is running
                worker.stale_checks = 0
                continue
            # Until its event loop has beaten once, a worker is still starting up.
            grace = self.startup_grace if state.heartbeat <= worker.spawn_beat else 0.0
            if now - state.heartbeat <= self.hang_timeout + grace:
                worker.stale_checks = 0
                continue
            # Confirmed on the next round (0.2 s later) before killing: one bad reading must
            # never cost a healthy worker its connections.
            worker.stale_checks += 1
            if worker.stale_checks >= CONFIRM_CHECKS:
                log.error("worker %d (pid %d) stopped answering for %.1fs%s; killing it",
                          index, worker.process.pid, now - state.heartbeat,
                          f" inside tenant {state.tenant!r}" if state.busy_since else "")
                worker.process.kill()
                worker.process.wait()
                if state.busy_since and state.version_id and self.on_fault:
                    try:
                        self.on_fault(state.tenant, state.version_id, worker.process.pid)
                    except Exception:
                        log.exception("could not record the faulty script version")
                self._retire(worker)
                self._spawn(index)

    def _wait_started(self, worker: Worker, timeout: float) -> bool:
        """True once the worker's own event loop has beaten (the spawn beat is ours)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.process.poll() is None:
            state = worker.slot.read()
            if state is None or state.heartbeat > worker.spawn_beat:  # None: busy writing
                return True
            time.sleep(0.05)
        return False

    def rolling_restart(self) -> None:
        for index in sorted(self.workers):
            old = self.workers[index]
            new = self._spawn(index)
            # The old worker keeps serving until the new one runs its event loop.
            if not self._wait_started(new, self.startup_grace):
                log.error("replacement worker %d did not start; keeping the old one", index)
                self._retire(new, sig=signal.SIGKILL, wait=5)
                self.workers[index] = old
                continue
            self._retire(old)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        def stop(*_):
            self._stopping = True

        def reload(*_):
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        for index in range(self.count):
            self._spawn(index)
        try:
            while not self._stopping:
                if self._reload:
                    self._reload = False
                    log.info("SIGHUP: restarting workers one by one")
                    self.rolling_restart()
                self.check()
                time.sleep(0.2)
        finally:
            log.info("stopping: draining %d workers", len(self.workers))
            for worker in self.workers.values():
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGTERM)
            for worker in self.workers.values():
                self._retire(worker)
            for listener in self.listeners:
                listener.close()
            try:
                os.rmdir(self.slot_dir)
            except OSError:
                pass
        return 0
