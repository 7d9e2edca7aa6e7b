"""Proxying through the real server: headers both ways, bodies, encodings, framing."""

import hashlib
import json
import time

import pytest

from tests.e2e.backends import GZIPPED, pattern_bytes
from tests.e2e.rawhttp import exchange, status_of

pytestmark = pytest.mark.e2e
H = {"Host": "routes.test"}


def _raw_echo(gateway, extra: bytes) -> tuple[int, dict]:
    answer = exchange(gateway.data_port, b"GET /raw/echo HTTP/1.1\r\nHost: routes.test\r\n"
                      + extra + b"Connection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    return status_of(answer), json.loads(body)


def test_hop_by_hop_removed_towards_the_backend_including_connection_named(gateway):
    status, body = _raw_echo(gateway, (
        b"Connection: keep-alive, X-Secret, X-Forwarded-For\r\nX-Secret: s\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\n"
        b"Trailer: X-T\r\nX-Fine: yes\r\n"))
    assert status == 200
    names = [name for name, _ in body["headers"]]
    for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "trailer"):
        assert name not in names
    assert names.count("connection") == 0 or dict(body["headers"])["connection"] != "X-Secret"
    headers = dict(body["headers"])
    assert headers["x-fine"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # named in Connection, still ours


def test_no_client_defaults_leak_and_host_is_the_backends(gateway, farm):
    status, body = _raw_echo(gateway, b"")
    names = {name for name, _ in body["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}
    assert dict(body["headers"])["host"] == f"127.0.0.1:{farm.backends['users'].port}"


def test_forwarding_headers(client):
    body = client.get("/raw/echo", headers={
        **H, "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.test", "Forwarded": "for=6.6.6.6"}).json()
    headers = dict(body["headers"])
    assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "routes.test"
    assert headers["forwarded"] == 'for="127.0.0.1";host="routes.test";proto=http'
    assert "6.6.6.6" not in headers["forwarded"]


def test_request_id_kept_or_generated(client):
    response = client.get("/raw/echo", headers={**H, "X-Request-ID": "ci-run-7.step:3"})
    assert response.headers["x-request-id"] == "ci-run-7.step:3"
    assert dict(response.json()["headers"])["x-request-id"] == "ci-run-7.step:3"
    response = client.get("/raw/echo", headers={**H, "X-Request-ID": "bad id with spaces"})
    generated = response.headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    assert dict(response.json()["headers"])["x-request-id"] == generated


def test_hop_by_hop_removed_towards_the_client_and_repeats_kept(client):
    response = client.get("/raw/hop", headers=H)
    assert response.status_code == 200
    for name in ("x-internal", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.headers.get_list("x-repeat") == ["1", "2"]


def test_gzip_passes_through_untouched(client):
    with client.stream("GET", "/raw/gzip", headers={**H, "Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert raw == GZIPPED
    assert int(response.headers["content-length"]) == len(GZIPPED)


def test_redirects_are_not_followed(client):
    response = client.get("/raw/redirect", headers=H)
    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.1:1/x"


def test_backend_sending_cl_and_te_never_reaches_the_client_as_is(gateway):
    answer = exchange(gateway.data_port,
                      b"GET /clte/clte HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert not (b"content-length:" in head and b"transfer-encoding:" in head)
    assert status_of(answer) == 502


def _rss_peak_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_large_download_streams_without_buffering(gateway, client):
    size = 48 * 1024 * 1024
    [worker] = gateway.worker_pids()
    before = _rss_peak_kb(worker)
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", f"/raw/big?n={size}", headers=H) as response:
        assert response.status_code == 200
        time.sleep(1.0)  # a slow client: the gateway must not read the whole body meanwhile
        for piece in response.iter_raw(65536):
            digest.update(piece)
            received += len(piece)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()
    grown_mb = (_rss_peak_kb(worker) - before) / 1024
    assert grown_mb < 24, f"worker peak RSS grew {grown_mb:.0f} MiB for a {size >> 20} MiB body"


def test_large_upload_arrives_whole(client):
    size = 12 * 1024 * 1024 + 7
    payload = pattern_bytes(size)
    response = client.put("/upload", headers=H, content=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["body_len"] == size
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert dict(body["headers"]).get("content-length") == str(size)


def test_chunked_upload_is_streamed_upstream(client):
    pieces = [pattern_bytes(100_000) for _ in range(5)]
    response = client.post("/users", headers=H, content=iter(pieces))
    body = response.json()
    assert body["body_len"] == 500_000
    assert body["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_environment_proxy_is_ignored(client):
    # The server runs with HTTP_PROXY/ALL_PROXY pointing at a dead port (see conftest).
    assert client.get("/raw/echo", headers=H).json()["backend"] == "users"
