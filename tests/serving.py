"""Start real `manage.py serve` processes for tests: a migrated database, seeded through the
services (tests/e2e/seed.py), listeners on free loopback ports, ready when /readyz says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.backends import free_port

ROOT = Path(__file__).resolve().parents[1]
MANAGE = [sys.executable, str(ROOT / "manage.py")]


def server_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
                "PYTHONPATH": str(ROOT), "CHISTONE_VAR_DIR": str(var_dir),
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def prepare_database(env: dict[str, str], spec: dict, tmp: Path) -> None:
    subprocess.run([*MANAGE, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT,
                   timeout=120)
    path = tmp / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "tests.e2e.seed", str(path)], env=env, check=True,
                   cwd=ROOT, timeout=120, stdout=subprocess.DEVNULL)


@dataclass
class Served:
    process: subprocess.Popen
    data_port: int
    control_port: int
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def data(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return {int(pid) for pid in out.split()}

    def wait_ready(self, timeout: float = 60.0, workers: int = 1) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                try:
                    ok = client.get(f"{self.data}/readyz").status_code == 200
                    if ok and len(self.worker_pids()) >= workers:
                        return
                except httpx.HTTPError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not become ready:\n{self.log_text()[-4000:]}")
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)


def start_serve(env: dict[str, str], log: Path, *args: str) -> Served:
    data_port, control_port = free_port(), free_port()
    command = [*MANAGE, "serve", "--host", "127.0.0.1", "--data-port", str(data_port),
               "--control-port", str(control_port), *args]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Served(process, data_port, control_port, log, env)
