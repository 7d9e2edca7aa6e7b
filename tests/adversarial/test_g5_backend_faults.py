"""Group 5: backend faults, through the real server.

Every fault answers as documented (502 refused / broken / invalid, 504 timeout) within its
timeout, never passes broken framing on, never follows a redirect, and leaves the upstream
pool and the worker fine for the next request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import time

import pytest

from tests.adversarial.live import CANNED
from tests.e2e.backends import GZIP_TEXT, GZIPPED, pattern_bytes
from tests.e2e.rawhttp import exchange

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("same_worker")]
HOST = "faults.test"


def timed_get(live, path: str, **kw):
    started = time.monotonic()
    response = live.get(HOST, path, **kw)
    return response, time.monotonic() - started


@pytest.mark.parametrize("path,status,code,limit_s", [
    ("/refused", 502, "backend_refused", 1.0),
    ("/blackhole", 504, "gateway_timeout", 0.8 + 1.0),  # read_timeout_ms 800
    ("/silent", 502, "backend_broke", 1.0),  # closed without an answer
    ("/reset-early", 502, "backend_broke", 1.0),  # RST before any response byte
    ("/garbage", 502, "backend_broke", 1.0),
    ("/bad-status", 502, "backend_broke", 1.0),  # HTTP/1.1 2000 WHAT
    ("/huge-header", 502, "backend_broke", 1.0),  # a 200 kB header line
    # Content-Length together with Transfer-Encoding: aiohttp refuses such a response, so
    # nothing ambiguous is relayed (RFC 9112 6.3 allows treating it as an error).
    ("/clte", 502, "backend_broke", 1.0),
])
def test_a_broken_backend_answers_a_clear_error_in_time(live, path, status, code, limit_s):
    response, seconds = timed_get(live, path)
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["error"] == code and body["request_id"] == response.headers["x-request-id"]
    assert seconds < limit_s
    if path == "/blackhole":
        assert seconds >= 0.75  # it did wait for the backend's read timeout


def _raw_get(live, path: str, *, read_for: float):
    """Send a GET on a raw socket and read until the server closes or `read_for` passes.
    Returns (bytes received, how the stream ended, seconds until it ended)."""
    sock = socket.create_connection(("127.0.0.1", live.data_port), timeout=read_for)
    started = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    data, ended = b"", "timeout"
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                ended = "closed"
                break
            data += piece
    except ConnectionResetError:
        ended = "reset"
    except TimeoutError:
        ended = "timeout"
    finally:
        sock.close()
    return data, ended, time.monotonic() - started


def test_a_reset_mid_body_aborts_the_client_connection(live):
    """The status is already out: the client must see an aborted connection, at once, never
    a clean end that would make the truncated body look complete."""
    data, ended, seconds = _raw_get(live, "/reset-mid", read_for=5.0)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 1000000" in head.lower()
    assert len(body) < 1_000_000
    assert ended in ("closed", "reset"), "the connection stayed open after the backend broke"
    assert seconds < 2.0


def test_a_slow_drip_is_cut_at_the_total_timeout(live):
    """The backend drips 5 bytes every 0.25 s for 5 s; the route's timeout_ms is 1500."""
    data, ended, seconds = _raw_get(live, "/drip", read_for=6.0)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert not body.endswith(b"0\r\n\r\n"), "a cut body was ended cleanly"
    assert ended in ("closed", "reset"), "the connection stayed open past the total timeout"
    assert 1.4 < seconds < 2.5


def test_a_huge_response_is_streamed_not_buffered(live):
    size = 48 * 1024 * 1024
    [worker] = live.worker_pids()
    before = _rss(worker)
    digest, received = hashlib.sha256(), 0
    with live.client(timeout=30) as client:
        with client.stream("GET", f"/big?n={size}", headers={"Host": HOST}) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers  # re-framed, chunked
            for chunk in response.iter_raw():
                digest.update(chunk)
                received += len(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()
    assert _rss(worker) - before < 24 * 1024 * 1024  # never held in memory


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_compressed_bytes_pass_untouched(live):
    with live.client() as client:
        with client.stream("GET", "/gzip", headers={"Host": HOST}) as response:
            raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert raw == GZIPPED and gzip.decompress(raw) == GZIP_TEXT
    assert int(response.headers["content-length"]) == len(GZIPPED)


def test_backend_hop_by_hop_headers_do_not_reach_the_client(live):
    response = live.get(HOST, "/hop")
    assert response.status_code == 200
    names = {name.lower() for name in response.headers}
    assert not names & {"x-internal", "keep-alive", "proxy-authenticate"}
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.headers.get_list("x-repeat") == ["1", "2"]


def test_a_redirect_to_an_internal_address_is_passed_through_not_followed(live):
    canary = live.farm.canary
    before = len(canary.seen)
    response = live.get(HOST, "/redirect", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"{canary.url}/stolen"
    time.sleep(0.2)
    assert len(canary.seen) == before  # the gateway never went there


def test_the_environment_proxy_is_ignored(live):
    assert live.env["HTTP_PROXY"].startswith("http://127.0.0.1:")  # a dead port
    response = live.get("plain.test", "/through-no-proxy")
    assert response.status_code == 200 and response.json()["backend"] == "adv-echo"


def test_the_pool_recovers_after_every_fault(live):
    for path in ("/reset-early", "/silent", "/garbage", "/bad-status", "/clte", "/refused",
                 "/huge-header"):
        assert live.get(HOST, path).status_code == 502
    for _ in range(5):  # the same backend process, through fresh or pooled connections
        response = live.get(HOST, "/good/x")
        assert response.status_code == 200 and response.json()["target"] == "/echo"
    assert live.get("nb.test", "/up").json()["backend"] == "adv-echo"
    for _ in range(3):
        assert live.get("nb.test", "/ok").text == "neighbour ok"


def test_faults_are_logged_with_the_request_id(live):
    offset = live.log_size()
    response = live.get(HOST, "/garbage")
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 3
    access: list[dict] = []
    lines: list[dict] = []
    while not access and time.monotonic() < deadline:  # the access log is written in batches
        time.sleep(0.1)
        lines = [json.loads(line) for line in live.log_since(offset).splitlines()
                 if line.startswith("{") and request_id in line]
        access = [entry for entry in lines if entry["logger"] == "chistone.access"]
    assert [(a["status"], a["error"], a["backend"]) for a in access] == [
        (502, "backend_broke", "garbage")]
    # The gateway's own warning is a JSON line tagged with the same request and tenant.
    warnings = [entry for entry in lines if entry["logger"] == "chistone.gateway"
                and entry["level"] == "warning" and entry["msg"].startswith("502 backend_broke")]
    assert warnings and all(w["request_id"] == request_id and w["tenant"] == access[0]["tenant"]
                            for w in warnings)


@pytest.mark.parametrize("name", sorted(CANNED))
def test_a_response_that_cannot_be_passed_on_is_a_502_never_relayed(live, same_worker, name):
    """A backend's broken framing or header bytes: the client gets the gateway's JSON 502 (or,
    where the upstream client could read the answer unambiguously, a response the gateway
    framed itself), never the backend's bytes."""
    data = exchange(live.data_port, f"GET /canned/canned/{name} HTTP/1.1\r\nHost: {HOST}\r\n"
                    f"Connection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lowered = head.lower()
    assert status in (200, 502), (name, data[:300])
    if status == 502:
        assert json.loads(body)["error"] == "backend_broke", name
    else:
        assert body == b"ok", (name, data[:300])
    for bad in (b"\x00", b"\x01", b"\x7f", b"x bad", b"\r\n ", b"content-length :", b"\rx-b"):
        assert bad not in lowered, (name, head)  # an obs-fold may arrive unfolded (RFC 9112 5.2)
    assert lowered.count(b"content-length") <= 1 and b"transfer-encoding: identity" not in lowered
