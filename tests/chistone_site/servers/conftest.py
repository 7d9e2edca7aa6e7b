"""Real daphne and uvicorn processes serving tests/chistone_site/servers/app.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.backends import free_port
from tests.serving import ROOT

APP = "tests.chistone_site.servers.app"


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=10) as client:
            return client.get(f"{self.url}{path}")


def command(server: str, app: str, port: int) -> list[str]:
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                f"{APP}:{app}"]
    return [sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            f"{APP}:{app}"]


def start(server: str, app: str, tmp: Path) -> Server:
    port = free_port()
    log = tmp / f"{server}-{app}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    with open(log, "wb") as out:
        process = subprocess.Popen(command(server, app, port), cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(server, port, process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if running.get("/ready").status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(running)
            raise RuntimeError(f"{server} did not start:\n{running.log_text()[-3000:]}")
        time.sleep(0.1)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(5)


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def served(request, tmp_path_factory):
    """The test application under each server, with that server's adapter."""
    name = request.param
    running = start(name, f"{name}_app", tmp_path_factory.mktemp(name))
    yield running
    stop(running)
