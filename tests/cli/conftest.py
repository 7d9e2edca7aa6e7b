"""A real `manage.py serve` on free ports with its own SQLite file, for the CLI tests."""

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

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    data_url: str
    token: str
    read_token: str
    override_token: str
    env: dict[str, str]


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("chistone-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHISTONE_")}
    env.update({
        "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
        "CHISTONE_VAR_DIR": str(root),
        "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
        "PYTHONUNBUFFERED": "1",
    })
    manage(env, "migrate", "--noinput", "--verbosity", "0")
    token = manage(env, "create_api_key", "--name", "ci",
                   "--scope", "read,write,activate").strip().splitlines()[-1]
    read_token = manage(env, "create_api_key", "--name", "pr-check").strip().splitlines()[-1]
    override_token = manage(env, "create_api_key", "--name", "release-manager", "--scope",
                            "read,write,activate,override").strip().splitlines()[-1]
    data_port, control_port = free_port(), free_port()
    log = open(root / "serve.log", "w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1",
         "--data-port", str(data_port), "--control-port", str(control_port), "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{control_port}"
    deadline = time.monotonic() + 40
    try:
        while True:
            try:
                if httpx.get(f"{url}/api/v1/schema/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n"
                                   + (root / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
        yield Server(url=url, data_url=f"http://127.0.0.1:{data_port}", token=token,
                     read_token=read_token, override_token=override_token, env=env)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
