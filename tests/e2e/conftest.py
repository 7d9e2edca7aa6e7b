"""End-to-end fixtures: real backends, a migrated temp SQLite file, and `manage.py serve`.

One server for the whole session (startup costs seconds); every scenario has its own tenant
and backends, so tests do not disturb one another. Network traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e import scenario
from tests.e2e.backends import BackendFarm, free_port

ROOT = Path(__file__).resolve().parents[2]
# "serve" runs `manage.py serve` (supervisor + one worker); "daphne" runs daphne itself on the
# same application with both listeners. Default: serve.
SERVER = os.environ.get("CHISTONE_E2E_SERVER", "serve")
pytestmark = pytest.mark.e2e


@dataclass
class Gateway:
    data: str
    control: str
    data_port: int
    control_port: int
    log: Path
    process: subprocess.Popen

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 10)
        return httpx.Client(base_url=self.data, trust_env=False, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        if SERVER != "serve":
            return [self.process.pid]
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [int(pid) for pid in out.split()]


def _env(db: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({
        "DATABASE_URL": f"sqlite:///{db}",
        "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
        "PYTHONPATH": str(ROOT),
        "CHISTONE_VAR_DIR": str(db.parent),
        **extra,
    })
    return env


@pytest.fixture(scope="session")
def farm():
    farm = BackendFarm()
    yield farm
    farm.close()


@pytest.fixture(scope="session")
def gateway(farm, tmp_path_factory) -> Gateway:
    tmp = tmp_path_factory.mktemp("gateway")
    db = tmp / "gateway.sqlite3"
    dead_proxy = free_port()
    env = _env(db, {
        "CHISTONE_HEALTH_INTERVAL_S": "0.2",
        "CHISTONE_HEALTH_TIMEOUT_S": "0.5",
        "CHISTONE_HEALTH_RISE": "2",
        "CHISTONE_HEALTH_FALL": "2",
        "CHISTONE_PASSIVE_FAILURES": "3",
        "CHISTONE_PASSIVE_COOLDOWN_S": "1.5",
        "CHISTONE_UPSTREAM_TOTAL_TIMEOUT_MS": "8000",
        "CHISTONE_JWKS_MIN_REFRESH_S": "1",  # key rotation within a test's patience
        # An environment proxy that would swallow every request if it were honoured.
        "HTTP_PROXY": f"http://127.0.0.1:{dead_proxy}",
        "http_proxy": f"http://127.0.0.1:{dead_proxy}",
        "ALL_PROXY": f"http://127.0.0.1:{dead_proxy}",
    })
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True,
                   cwd=ROOT, timeout=120)
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(scenario.spec(farm)))
    subprocess.run([sys.executable, "-m", "tests.e2e.seed", str(spec)], env=env, check=True,
                   cwd=ROOT, timeout=120)
    data_port, control_port = free_port(), free_port()
    log = tmp / "serve.log"
    env["CHISTONE_DATA_PORT"], env["CHISTONE_CONTROL_PORT"] = str(data_port), str(control_port)
    if SERVER == "serve":
        command = [*manage, "serve", "--host", "127.0.0.1", "--data-port", str(data_port),
                   "--control-port", str(control_port), "--workers", "1"]
    else:  # the same application under daphne with both listeners, without the supervisor
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(data_port),
                   "-e", f"tcp:port={control_port}:interface=127.0.0.1",
                   "chistone_site.asgi:application"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    gw = Gateway(f"http://127.0.0.1:{data_port}", f"http://127.0.0.1:{control_port}",
                 data_port, control_port, log, process)
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            try:
                if client.get(f"{gw.data}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not become ready:\n{gw.log_text()[-4000:]}")
            time.sleep(0.1)
    yield gw
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.fixture
def client(gateway):
    with gateway.client() as client:
        yield client
