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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.backends import free_port

ROOT = Path(__file__).resolve().parents[1]
MANAGE = [sys.executable, str(ROOT / "manage.py")]


# The PostgreSQL the suite runs against (.ci/run; trust auth on loopback).
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def pg_url(name: str, port: int = 5432) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for gateway nodes to share; its name, dropped afterwards
    (the nodes' connections are closed first)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", [name])
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


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


def create_api_key(env: dict[str, str], name: str = "ops",
                   scope: str = "read,write,activate") -> str:
    out = subprocess.run([*MANAGE, "create_api_key", "--name", name, "--scope", scope], env=env,
                         check=True, cwd=ROOT, timeout=60, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


class TcpForwarder:
    """A loopback TCP relay the test can cut and restore: a database that goes away."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.port = free_port()
        self._socket = socket
        self._threading = threading
        self._conns: list = []
        self._listener = None
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        sock = self._socket.socket()
        sock.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        self._threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass
