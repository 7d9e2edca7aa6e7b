"""Group 4: protocol abuse, through the real server (`manage.py serve`, daphne on Twisted).

Raw bytes on a socket, because no client library sends these requests. Expected: a 400 (or a
safe normalisation), never a request to an unregistered host, never a header the client (or a
script) should not control reaching the backend, and never a crashed or restarted worker.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.e2e.rawhttp import exchange

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("same_worker")]


def parse(answer: bytes) -> tuple[int | None, dict[str, list[str]], bytes]:
    """(status, headers by lower-case name, body); status None when nothing came back."""
    if not answer:
        return None, {}, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split(" ", 2)[1]), headers, body


def send(live, data: bytes, timeout: float = 5.0):
    return parse(exchange(live.data_port, data, timeout=timeout))


def get(path: str, host: str | None = "adv.test", *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [*extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def seen_headers(body: bytes) -> dict[str, list[str]]:
    """What the echo backend received, by name."""
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name, []).append(value)
    return out


@pytest.fixture
def echo_seen(live):
    """Requests the echo backend receives during the test."""
    seen = live.farm.echo.seen
    start = len(seen)

    class View:
        @property
        def count(self) -> int:
            return len(seen) - start

        def last(self):
            return seen[-1]

    return View()


def assert_refused(status, body, code: str = "bad_request") -> None:
    assert status == 400, (status, body[:300])
    assert json.loads(body)["error"] == code


# -- Host ----------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    get("/raw/x", None),
    get("/raw/x", "adv.test", "Host: adv.test"),
    get("/raw/x", "adv.test", "Host: evil.test"),
    b"GET /raw/x HTTP/1.0\r\n\r\n",
], ids=["missing", "twice-same", "twice-different", "http10-without-host"])
def test_missing_or_repeated_host_is_400(live, echo_seen, request_bytes):
    status, _, body = send(live, request_bytes)
    assert_refused(status, body)
    assert echo_seen.count == 0


@pytest.mark.parametrize("host", [
    "a b", ":99999", "adv.test:99999", "adv.test:", "evil.test@adv.test", "adv.test/x",
    "[::1", "adv..test", "-adv.test", "adv.test\tx", "",
])
def test_malformed_host_is_400(live, echo_seen, host):
    status, _, body = send(live, get("/raw/x", host))
    assert_refused(status, body)
    assert json.loads(body)["detail"].startswith("The Host header")
    assert echo_seen.count == 0


@pytest.mark.parametrize("host", ["ADV.TEST", "adv.test.", "adv.test:8080", "Adv.Test.:1"])
def test_host_is_normalised_to_the_registered_tenant(live, host):
    status, _, body = send(live, get("/ok", host))
    assert (status, body) == (200, b"ok adv")


def test_an_unregistered_host_reaches_no_backend(live, echo_seen):
    for host in ("evil.test", "localhost", "127.0.0.1", "adv.test.evil.test"):
        status, _, body = send(live, get("/raw/x", host))
        assert status == 404 and json.loads(body)["error"] == "no_tenant", host
    assert echo_seen.count == 0


# -- the request target --------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "http://evil.example/raw/x", "http://adv.test/raw/x", "//evil.example/raw/x", "*",
    "adv.test:443",
])
def test_absolute_and_authority_forms_are_400(live, echo_seen, target):
    method = "CONNECT" if target == "adv.test:443" else "GET"
    status, _, body = send(live, get(target, method=method))
    assert_refused(status, body)
    assert echo_seen.count == 0


@pytest.mark.parametrize("path", [
    "/raw/../admin", "/raw/./x", "/raw/%2e%2e/admin", "/raw/%2E%2e/admin", "/raw/.%2e/admin",
    "/raw/..%2fadmin", "/raw/..%5cadmin", "/raw/..\\admin", "/raw/%00x", "/raw/%0d%0aX-A:%20b",
    "/raw/%0Ax",
])
def test_dot_segments_and_encoded_controls_are_400(live, echo_seen, path):
    status, _, body = send(live, get(path))
    assert_refused(status, body)
    assert echo_seen.count == 0


@pytest.mark.parametrize("path,upstream", [
    ("/raw/a%2fb", "/a%2fb"),  # an encoded slash is not a separator and is not decoded
    ("/raw/%2561", "/%2561"),  # no double decoding
    ("/raw/a%20b", "/a%20b"),
    ("/raw/caf%C3%A9", "/caf%C3%A9"),
])
def test_encoded_paths_are_forwarded_exactly_as_sent(live, path, upstream):
    status, _, body = send(live, get(path))
    assert status == 200 and json.loads(body)["target"] == upstream


@pytest.mark.parametrize("request_bytes", [
    b"get /ok HTTP/1.1\r\nHost: adv.test\r\nConnection: close\r\n\r\n",
    b"G\x00T /ok HTTP/1.1\r\nHost: adv.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/\xc3\xa9 HTTP/1.1\r\nHost: adv.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/a b HTTP/1.1\r\nHost: adv.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/x HTTP/9.9\r\nHost: adv.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/x\r\n\r\n",
], ids=["lower-case-method", "nul-in-method", "raw-non-ascii", "space-in-target",
        "unknown-version", "http09"])
def test_malformed_request_lines_are_400(live, echo_seen, request_bytes):
    status, _, _ = send(live, request_bytes)
    assert status == 400
    assert echo_seen.count == 0


def test_a_path_over_the_limit_is_414(live, echo_seen):
    status, _, body = send(live, get("/raw/" + "a" * 9000))
    assert status == 414 and json.loads(body)["error"] == "uri_too_long"
    assert echo_seen.count == 0


@pytest.mark.parametrize("request_bytes", [
    get("/raw/" + "a" * 20000),
    get("/raw/x", "adv.test", "X-Big: " + "b" * 20000),
    get("/raw/x", "adv.test", *(f"X-H{i}: " + "h" * 8000 for i in range(3))),
    get("/raw/x", "adv.test", *(f"X-H{i}: v" for i in range(600))),
], ids=["path-20k", "one-header-20k", "headers-24k", "600-headers"])
def test_oversized_requests_are_cut_by_the_http_server(live, echo_seen, request_bytes):
    """Twisted's limits (16 KiB per line and for all headers, 500 headers) come before the
    gateway's (8 KiB path: 414; 64 KiB of headers: 431): a 400 or a closed connection."""
    status, _, _ = send(live, request_bytes)
    assert status in (None, 400)
    assert echo_seen.count == 0


def test_many_headers_below_the_limits_are_forwarded(live, echo_seen):
    status, _, body = send(live, get("/raw/x", "plain.test",
                                     *(f"X-H{i}: v{i}" for i in range(400))))
    assert status == 200
    assert sum(1 for name in seen_headers(body) if name.startswith("x-h")) == 400


# -- request smuggling shapes --------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
    b"abcd",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nContent-Length: +3\r\n\r\nabc",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nContent-Length: 3 3\r\n\r\nabc",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n",
    b"POST /raw/x HTTP/1.1\r\nHost: adv.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"GET /raw/x HTTP/1.1\r\nHost: adv.test\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /raw/x HTTP/1.1\r\nHost: adv.test\r\nX-Cr: a\rb\r\n\r\n",
], ids=["cl-and-te", "two-cl", "cl-plus", "cl-list", "te-chunked-identity", "te-xchunked",
        "te-space-before-colon", "te-twice", "chunk-size-0x", "nul-in-header", "cr-in-header"])
def test_ambiguous_framing_is_400_and_reaches_no_backend(live, echo_seen, request_bytes):
    """Twisted's refusals today; a regression guard should a later version relax them."""
    status, _, _ = send(live, request_bytes)
    assert status == 400
    assert echo_seen.count == 0


@pytest.mark.parametrize("fold", [" b", "\tb"])
def test_an_obs_folded_header_is_refused_and_reaches_no_backend(live, echo_seen, fold):
    """RFC 9112 5.2 allows unfolding or a 400; like nginx, the gateway refuses (it used to
    arrive unfolded, Twisted's choice), so no backend has to agree on how to unfold."""
    status, _, body = send(live, get("/raw/x", "adv.test", "X-Fold: a", fold))
    assert status == 400 and b'"bad_request"' in body
    assert echo_seen.count == 0


def test_a_chunked_body_is_reframed_for_the_backend(live):
    payload = bytes(range(256)) * 400
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 7000]), payload[i:i + 7000])
                      for i in range(0, len(payload), 7000))
    status, _, body = send(live, b"POST /raw/upload HTTP/1.1\r\nHost: adv.test\r\n"
                                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                           + chunks + b"0\r\n\r\n")
    seen = json.loads(body)
    assert status == 200 and seen["body_len"] == len(payload)
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


# -- headers a client must not control -----------------------------------------------------

def test_spoofed_forwarding_headers_are_replaced_or_appended(live):
    status, _, body = send(live, get(
        "/raw/x", "adv.test", "X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.example", 'Forwarded: for="6.6.6.6";host=evil.example',
        "X-Real-IP: 6.6.6.6"))
    assert status == 200
    seen = seen_headers(body)
    assert seen["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]  # appended, the peer last
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["adv.test"]
    assert seen["forwarded"] == ['for="127.0.0.1";host="adv.test";proto=http']
    # What a script sees: the peer, not the client's claim (no trusted proxies configured).
    status, _, body = send(live, get("/whoami", "adv.test", "X-Forwarded-For: 6.6.6.6",
                                     "X-Forwarded-Proto: https"))
    assert status == 200
    assert json.loads(body) == {"ip": "127.0.0.1", "scheme": "http", "host": "adv.test",
                                "xff": "6.6.6.6"}


def test_connection_named_and_hop_by_hop_headers_never_reach_the_backend(live):
    status, _, body = send(live, get(
        "/raw/x", "plain.test", "Connection: keep-alive, X-Secret, X-Forwarded-For, Upgrade",
        "X-Secret: s3cr3t", "X-Forwarded-For: 6.6.6.6", "Keep-Alive: timeout=99", "TE: trailers",
        "Trailer: X-T", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__",
        "Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Connection: keep-alive",
        "X-Kept: yes"))
    assert status == 200
    seen = seen_headers(body)
    for name in ("x-secret", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
                 "proxy-connection", "connection", "transfer-encoding"):
        assert name not in seen, name
    assert seen["x-kept"] == ["yes"]
    # Naming X-Forwarded-For in Connection cannot remove the gateway's own.
    assert seen["x-forwarded-for"][-1].endswith("127.0.0.1")


@pytest.mark.parametrize("given,kept", [
    ("client-id-42.a:b_c", True), ("a b", False), ("<script>", False), ("x" * 200, False),
])
def test_request_ids_from_clients_are_kept_only_when_sane(live, given, kept):
    status, headers, body = send(live, get("/raw/x", "adv.test", f"X-Request-ID: {given}"))
    assert status == 200
    [sent_back] = headers["x-request-id"]
    assert seen_headers(body)["x-request-id"] == [sent_back]
    assert (sent_back == given) is kept
    if not kept:
        assert len(sent_back) == 32 and int(sent_back, 16) >= 0


# -- header injection through script-set headers -------------------------------------------

@pytest.mark.parametrize("route,message", [
    ("/inject/set-crlf", "contains CR, LF or NUL"),
    ("/inject/set-lf", "contains CR, LF or NUL"),
    ("/inject/set-nul", "contains CR, LF or NUL"),
    ("/inject/name", "is not a valid HTTP token"),
    ("/inject/req-header", "contains CR, LF or NUL"),
    ("/inject/respond", "contains CR, LF or NUL"),
    ("/inject/legacy", "contains CR, LF or NUL"),
    ("/inject/path", "must not contain spaces, CR, LF"),
    ("/inject/authority", "must start with exactly one '/'"),
    ("/inject/dots", "must not contain '.' or '..' segments"),
    ("/inject/query", "must not contain spaces, control characters"),
])
def test_script_set_headers_and_targets_cannot_inject(live, echo_seen, route, message):
    offset = live.log_size()
    status, headers, body = send(live, get(route))
    assert status == 500 and json.loads(body)["error"] == "script_error"
    assert not any(name in headers for name in ("x-injected", "x-a", "set-cookie"))
    assert b"evil" not in body and b"injected" not in body
    assert echo_seen.count == 0
    request_id = headers["x-request-id"][0]
    logged = live.log_since(offset)
    at = logged.find(f"request {request_id}: ScriptRuntimeError")
    assert at >= 0 and message in logged[at:at + 600], logged[-2000:]


def test_a_script_cannot_override_the_gateways_own_headers(live):
    status, headers, body = send(live, get("/managed"))
    assert status == 200
    seen = seen_headers(body)
    assert seen["host"] == [f"127.0.0.1:{live.farm.echo.port}"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["adv.test"]
    assert seen["x-request-id"] == headers["x-request-id"]
    assert seen["forwarded"] == ['for="127.0.0.1";host="adv.test";proto=http']
    for name in ("connection", "x-keep", "transfer-encoding", "te", "upgrade"):
        assert name not in seen, name
