"""The server adapters under the real servers they adapt.

These are the tests that fail when a daphne, Twisted or uvicorn upgrade moves what an adapter
needs: the connection must be found, back-pressure must hold a slow client's response back,
and abort must drop the connection mid-body. A silent fallback to no back-pressure would
otherwise go unnoticed until a slow client filled a worker's memory.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.chistone_site.servers.conftest import start, stop


def test_the_adapter_finds_the_servers_connection(served):
    expected = {"daphne": "DaphneConnection", "uvicorn": "UvicornConnection"}[served.name]
    assert served.get("/info").json() == {"connection": expected}
    assert "adapter cannot reach" not in served.log_text()


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_detection_picks_the_running_server(server, tmp_path):
    running = start(server, "detecting", tmp_path)
    try:
        expected = {"daphne": "DaphneConnection", "uvicorn": "UvicornConnection"}[server]
        assert running.get("/info").json() == {"connection": expected}
        assert running.get("/info").json() == {"connection": expected}  # decided once, kept
    finally:
        stop(running)


def _open_stream(port: int, size: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /stream?n={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    return sock, data.partition(b"\r\n\r\n")[2]


def test_back_pressure_holds_a_slow_clients_response(served):
    """The client reads the head, then nothing for a second: the application must be held
    back after what the socket buffers take, not hand over the whole body to the server."""
    size = 64 * 1024 * 1024
    sock, body = _open_stream(served.port, size)
    try:
        time.sleep(1.0)
        handed_over = served.get("/progress").json()["sent"]
        assert handed_over < 16 * 1024 * 1024, (
            f"{served.name} took {handed_over >> 20} MiB for a client that reads nothing")
        received = len(body)
        while received < size:  # then the client reads: everything arrives, intact
            piece = sock.recv(1 << 20)
            assert piece, "the stream ended early"
            received += len(piece)
        assert received == size
    finally:
        sock.close()
    assert served.get("/progress").json() == {"sent": size, "done": True}


def test_abort_drops_the_connection_mid_body(served):
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    started = time.monotonic()
    data, ended = b"", "timeout"
    try:
        sock.sendall(b"GET /abort HTTP/1.1\r\nHost: t\r\n\r\n")
        while True:
            piece = sock.recv(65536)
            if not piece:
                ended = "closed"
                break
            data += piece
    except ConnectionResetError:
        ended = "reset"
    except TimeoutError:
        pass
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) < 1_000_000
    assert ended in ("closed", "reset"), "the connection stayed open after the abort"
    assert time.monotonic() - started < 2.0
    assert served.get("/info").status_code == 200  # the server is fine
    assert "Exception in ASGI application" not in served.log_text()
    assert "without completing response" not in served.log_text()
