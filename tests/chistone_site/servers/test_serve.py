"""`manage.py serve` under each server: the gateway's abort and back-pressure go through the
server adapter (chistone_site/servers) for real, and hostile bytes never reach a 500."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from tests.e2e.backends import BackendFarm, pattern_bytes
from tests.serving import prepare_database, server_env, start_serve

HOST = "servers.test"


@pytest.fixture(scope="module")
def farm():
    farm = BackendFarm()
    farm.add("origin")
    yield farm
    farm.close()


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def served(request, farm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    env = server_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp, CHISTONE_ACCESS_LOG="1")
    prepare_database(env, {"tenants": [{"slug": "servers", "domains": [HOST], "backends": [
        {"name": "origin", "url": farm.backends["origin"].url}]}]}, tmp)
    running = start_serve(env, tmp / "serve.log", "--workers", "1", "--server", request.param)
    try:
        running.wait_ready(workers=1)
    except Exception:
        running.stop()
        raise
    running.server = request.param
    yield running
    running.stop()


def _raw(port: int, request: bytes, *, read_for: float = 5.0) -> tuple[bytes, str, float]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_for)
    started, data, ended = time.monotonic(), b"", "timeout"
    try:
        sock.sendall(request)
        while True:
            piece = sock.recv(65536)
            if not piece:
                ended = "closed"
                break
            data += piece
            if b"\r\n\r\n" in data and b"connection: close" not in data.lower() \
                    and data.split(b"\r\n\r\n", 1)[1].startswith(b"{") \
                    and data.endswith(b"}"):
                ended = "answered"
                break
    except ConnectionResetError:
        ended = "reset"
    except TimeoutError:
        pass
    finally:
        sock.close()
    return data, ended, time.monotonic() - started


def test_a_backend_breaking_mid_body_aborts_the_client_connection(served):
    data, ended, seconds = _raw(served.data_port, b"GET /reset HTTP/1.1\r\nHost: " + HOST.encode()
                                + b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"content-length: 1000000" in head.lower()
    assert len(body) < 1_000_000
    assert ended in ("closed", "reset"), f"{served.server}: the connection stayed open"
    assert seconds < 2.0
    assert "Exception in ASGI application" not in served.log_text()


def test_a_slow_client_does_not_make_the_worker_hold_the_response(served):
    size = 48 * 1024 * 1024
    [worker] = served.worker_pids()
    before = _rss(worker)
    sock = socket.create_connection(("127.0.0.1", served.data_port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /big?n={size} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                 .encode())
    time.sleep(1.5)  # a client that reads nothing: the worker must not read the backend dry
    held = _rss(worker) - before
    data = bytearray()
    while piece := sock.recv(1 << 20):
        data += piece
    sock.close()
    assert held < 24 * 1024 * 1024, f"{served.server}: the worker grew {held >> 20} MiB"
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(_dechunk(body)).digest() == hashlib.sha256(
        pattern_bytes(size)).digest()


@pytest.mark.parametrize("line", [b"X: a\x01b", b"X: a\x7fb", b"X-\x01: b", b"X: caf\xe9"])
def test_hostile_header_bytes_are_a_json_400_never_a_500(served, line):
    data, _, _ = _raw(served.data_port, b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
                      + line + b"\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), (served.server, data[:300])
    if served.server == "daphne":  # uvicorn's own parser refusals stay its plain text
        assert body.startswith(b"{") and b"bad_request" in body


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _dechunk(body: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        at = end + 4 + size
