"""The raw requests of the differential suite, by desync class.

Classes from narfindustries/http-garden (its README and TROPHIES.md): whitespace and control
bytes around header names and values, obsolete line folding, bare LF, duplicate and
conflicting framing headers (Content-Length, Transfer-Encoding), chunk-size and
chunk-extension oddities, NUL bytes, request-line and Host oddities, pipelining. Payloads
named `garden-sN` / `garden-tN` are the garden's server (S) and transducer (T) bug payloads,
with a Host header added where they had none so that both proxies route them.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = b"diff.test"
H = b"Host: " + HOST + b"\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    expect: int = 1  # answers a well-behaved proxy gives (2 for pipelined requests)


def _get(*lines: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    return method + b" /probe HTTP/1.1\r\n" + H + b"".join(lines) + b"\r\n" + body


def _post(*lines: bytes, body: bytes) -> bytes:
    return _get(*lines, method=b"POST", body=body)


CHUNKED = b"Transfer-Encoding: chunked\r\n"
BYTES = {0x00: "nul", 0x01: "soh", 0x09: "tab", 0x0B: "vt", 0x0C: "ff", 0x0D: "cr",
         0x1F: "us", 0x20: "sp", 0x7F: "del", 0x85: "nel", 0xA0: "nbsp", 0xFF: "ff8"}


def _whitespace_and_control() -> list[Case]:
    cases = []
    for byte, label in BYTES.items():
        b = bytes([byte])
        for where, line in (
            ("name-prefix", b + b"X-Probe: v\r\n"),
            ("name-inside", b"X-Pr" + b + b"obe: v\r\n"),
            ("name-suffix", b"X-Probe" + b + b": v\r\n"),
            ("value-prefix", b"X-Probe:" + b + b"v\r\n"),
            ("value-inside", b"X-Probe: a" + b + b"b\r\n"),
            ("value-suffix", b"X-Probe: v" + b + b"\r\n"),
        ):
            cases.append(Case(f"{where}-{label}", _get(line)))
        for where, line in (
            ("te-name-suffix", b"Transfer-Encoding" + b + b": chunked\r\n"),
            ("te-value-prefix", b"Transfer-Encoding:" + b + b"chunked\r\n"),
            ("te-value-suffix", b"Transfer-Encoding: chunked" + b + b"\r\n"),
        ):
            cases.append(Case(f"{where}-{label}", _post(line, body=b"1\r\nZ\r\n0\r\n\r\n")))
        for where, line in (
            ("cl-name-suffix", b"Content-Length" + b + b": 1\r\n"),
            ("cl-value-prefix", b"Content-Length:" + b + b"1\r\n"),
            ("cl-value-suffix", b"Content-Length: 1" + b + b"\r\n"),
        ):
            cases.append(Case(f"{where}-{label}", _post(line, body=b"Z")))
    return cases


CASES: list[Case] = [
    Case("baseline-get", _get()),
    Case("baseline-post", _post(b"Content-Length: 5\r\n", body=b"hello")),
    Case("baseline-chunked", _post(CHUNKED, body=b"5\r\nhello\r\n0\r\n\r\n")),
    *_whitespace_and_control(),
    Case("value-utf8", _get("X-Probe: café ☕ 𝄞\r\n".encode())),
    Case("value-latin1-text", _get(b"X-Probe: caf\xe9\r\n")),
    # obsolete line folding
    Case("fold-space", _get(b"X-Probe: a\r\n b\r\n")),
    Case("fold-tab", _get(b"X-Probe: a\r\n\tb\r\n")),
    Case("fold-first-line", b"GET /probe HTTP/1.1\r\n X-Probe: a\r\n" + H + b"\r\n"),
    Case("fold-te", _post(b"Transfer-Encoding:\r\n chunked\r\n", body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("fold-cl", _post(b"Content-Length:\r\n 1\r\n", body=b"Z")),
    Case("fold-host", b"GET /probe HTTP/1.1\r\nHost:\r\n " + HOST + b"\r\n\r\n"),
    # bare LF and bare CR
    Case("lf-request-line", b"GET /probe HTTP/1.1\n" + H + b"\r\n"),
    Case("lf-header-line", b"GET /probe HTTP/1.1\r\nX-Probe: v\n" + H + b"\r\n"),
    Case("lf-everywhere", b"GET /probe HTTP/1.1\nHost: diff.test\nX-Probe: v\n\n"),
    Case("lf-head-end", b"GET /probe HTTP/1.1\r\n" + H + b"\n"),
    Case("lf-chunk-size", _post(CHUNKED, body=b"1\nZ\r\n0\r\n\r\n")),
    Case("lf-chunk-data", _post(CHUNKED, body=b"1\r\nZ\n0\r\n\r\n")),
    Case("lf-last-chunk", _post(CHUNKED, body=b"0\n\r\n")),  # the garden README's example
    Case("cr-header-line", _get(b"X-Probe: a\rX-Smuggled: b\r\n")),  # garden-s13
    Case("cr-head-end", b"GET /probe HTTP/1.1\r\n" + H + b"\rZGET /evil HTTP/1.1\r\n\r\n"),
    # duplicate and conflicting framing headers
    Case("cl-te", _post(b"Content-Length: 5\r\n", CHUNKED, body=b"0\r\n\r\n")),
    Case("te-cl", _post(CHUNKED, b"Content-Length: 5\r\n", body=b"0\r\n\r\n")),
    Case("cl-twice-same", _post(b"Content-Length: 1\r\nContent-Length: 1\r\n", body=b"Z")),
    Case("cl-twice-different", _post(b"Content-Length: 1\r\nContent-Length: 0\r\n", body=b"Z")),
    Case("cl-list", _post(b"Content-Length: 1, 1\r\n", body=b"Z")),
    Case("cl-plus", _post(b"Content-Length: +1\r\n", body=b"Z")),
    Case("cl-leading-zero", _post(b"Content-Length: 01\r\n", body=b"Z")),
    Case("cl-hex", _post(b"Content-Length: 0x1\r\n", body=b"Z")),
    Case("cl-underscore", _post(b"Content-Length: 1_0\r\n", body=b"0123456789")),
    Case("cl-negative", _post(b"Content-Length: -1\r\n", body=b"Z")),
    Case("cl-empty", _post(b"Content-Length: \r\n", body=b"")),
    Case("cl-suffix-garbage", _post(b"Content-Length: 1Z\r\n", body=b"Z")),
    Case("cl-huge", _post(b"Content-Length: 99999999999999999999\r\n", body=b"Z")),
    Case("cl-no-colon", _post(b"Content-Length 1\r\n", body=b"Z")),  # garden-s28
    Case("te-twice", _post(CHUNKED, CHUNKED, body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-list-twice", _post(b"Transfer-Encoding: chunked, chunked\r\n",
                                body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-gzip-chunked", _post(b"Transfer-Encoding: gzip, chunked\r\n",
                                  body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-chunked-gzip", _post(b"Transfer-Encoding: chunked, gzip\r\n",
                                  body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-identity", _post(b"Transfer-Encoding: identity\r\n", body=b"")),
    Case("te-upper", _post(b"Transfer-Encoding: CHUNKED\r\n", body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-leading-comma", _post(b"Transfer-Encoding: ,chunked\r\n",
                                   body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-unknown", _post(b"Transfer-Encoding: blegh\r\n", body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-quoted", _post(b'Transfer-Encoding: "chunked"\r\n', body=b"1\r\nZ\r\n0\r\n\r\n")),
    Case("te-http10", b"POST /probe HTTP/1.0\r\n" + H + CHUNKED + b"\r\n1\r\nZ\r\n0\r\n\r\n"),
    Case("te-name-split", _post(b"Transfer-\r\nEncoding: chunked\r\n",  # garden-s37
                                b"Content-Length: 5\r\n", body=b"0\r\n\r\n")),
    # chunk sizes and extensions
    Case("chunk-hex-prefix", _post(CHUNKED, body=b"0x1\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-plus", _post(CHUNKED, body=b"+1\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-minus-zero", _post(CHUNKED, body=b"-0\r\n\r\n")),
    Case("chunk-underscore", _post(CHUNKED, body=b"0_2e\r\n\r\n")),  # garden-s1
    Case("chunk-leading-space", _post(CHUNKED, body=b" 1\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-trailing-space", _post(CHUNKED, body=b"1 \r\nZ\r\n0\r\n\r\n")),
    Case("chunk-leading-zeros", _post(CHUNKED, body=b"0001\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-overflow", _post(CHUNKED, body=b"10000000000000001\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-empty-size", _post(CHUNKED, body=b"\r\n\r\n")),  # garden-s17
    Case("chunk-invalid", _post(CHUNKED, body=b"Z\r\nZZ\r\nZZZ\r\n\r\n")),  # garden-t2
    Case("chunk-prefix-valid", _post(CHUNKED, body=b"1these-bytes\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-ext", _post(CHUNKED, body=b"1;a=b\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-ext-bare", _post(CHUNKED, body=b"1;a\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-ext-space", _post(CHUNKED, body=b"1 ;a=b\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-ext-quoted", _post(CHUNKED, body=b'1;a="b c"\r\nZ\r\n0\r\n\r\n')),
    Case("chunk-ext-cr", _post(CHUNKED, body=b"1;a\rb\r\nZ\r\n0\r\n\r\n")),  # garden-s36
    Case("chunk-ext-nul", _post(CHUNKED, body=b"1;a\x00b\r\nZ\r\n0\r\n\r\n")),
    Case("chunk-cr-before-ext", _post(CHUNKED, body=b"1\r;a\r\nZ\r\n0\r\n\r\n")),  # garden-t3
    Case("chunk-data-too-long", _post(CHUNKED, body=b"1\r\nZZ\r\n0\r\n\r\n")),
    Case("chunk-data-any-end", _post(CHUNKED, body=b"1\r\nZXX0\r\n\r\n")),  # garden-s39
    Case("chunk-trailer", _post(CHUNKED, body=b"1\r\nZ\r\n0\r\nX-Trailer: t\r\n\r\n")),
    Case("chunk-trailer-bad", _post(CHUNKED, body=b"1\r\nZ\r\n0\r\nnot a field\r\n\r\n")),
    Case("chunk-extra-crlf", _post(CHUNKED, body=b"1\r\nZ\r\n\r\n0\r\n\r\n")),  # garden-t17
    # NUL bytes
    Case("nul-method", b"G\x00ET /probe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("nul-target", b"GET /pro\x00be HTTP/1.1\r\n" + H + b"\r\n"),
    Case("nul-version", b"GET /probe HTTP/1.1\x00\r\n" + H + b"\r\n"),
    Case("nul-host", b"GET /probe HTTP/1.1\r\nHost: diff.test\x00.evil\r\n\r\n"),
    Case("nul-body", _post(b"Content-Length: 3\r\n", body=b"a\x00b")),
    Case("nul-line", _get(b"\x00\r\n")),
    Case("nul-after-request", _get() + b"\x00"),  # garden-x3, a stray byte after a request
    # request line
    Case("rl-double-space", b"GET  /probe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-tab", b"GET\t/probe\tHTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-trailing-space", b"GET /probe HTTP/1.1 \r\n" + H + b"\r\n"),
    Case("rl-version-1.32", b"GET /probe HTTP/1.32\r\n" + H + b"\r\n"),  # garden-s5
    Case("rl-version-2", b"GET /probe HTTP/2.0\r\n" + H + b"\r\n"),
    Case("rl-version-09", b"GET /probe\r\n\r\n"),
    Case("rl-version-lower", b"GET /probe http/1.1\r\n" + H + b"\r\n"),
    Case("rl-method-odd", b'G=":<>(e),[T];?" /probe HTTP/1.1\r\n' + H + b"\r\n"),  # garden-s6
    Case("rl-method-lower", b"get /probe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-bang", b"GET ! HTTP/1.1\r\n" + H + b"\r\n"),  # garden-s7
    Case("rl-target-absolute", b"GET http://diff.test/probe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-fragment", b"GET /probe#frag HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-high-byte", b"GET /pr\xffobe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-ctl", b"GET /pr\x01obe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-dots", b"GET /a/../probe HTTP/1.1\r\n" + H + b"\r\n"),
    Case("rl-target-encoded", b"GET /a%2Fb%20c?x=%00 HTTP/1.1\r\n" + H + b"\r\n"),
    # Host
    Case("host-missing", b"GET /probe HTTP/1.1\r\n\r\n"),
    Case("host-twice", _get(b"Host: other.test\r\n")),
    Case("host-empty", b"GET /probe HTTP/1.1\r\nHost:\r\n\r\n"),
    Case("host-userinfo", b"GET /probe HTTP/1.1\r\nHost: a@diff.test\r\n\r\n"),
    Case("host-space", b"GET /probe HTTP/1.1\r\nHost: diff .test\r\n\r\n"),
    Case("host-bad-port", b"GET /probe HTTP/1.1\r\nHost: diff.test:99999\r\n\r\n"),
    Case("host-port", b"GET /probe HTTP/1.1\r\nHost: diff.test:80\r\n\r\n"),
    # header names
    Case("name-empty", _get(b": v\r\n")),  # garden-s18
    Case("name-colon-only", _get(b":\r\n")),  # garden-s27
    Case("name-underscore", _get(b"X_Probe: v\r\n")),
    Case("name-separators", _get(b'X(Probe)"/: v\r\n')),
    Case("name-no-colon", _get(b"X-Probe v\r\n")),
    Case("name-high-byte", _get(b"\xefoo: bar\r\n")),  # garden-s8
    Case("line-no-colon-lf", _get(b"Te\nst: test\r\n")),  # garden-t14
    # hop-by-hop and connection handling
    Case("connection-named", _get(b"Connection: X-Secret\r\n", b"X-Secret: s\r\n")),
    Case("connection-close", _get(b"Connection: close\r\n")),
    Case("keep-alive-header", _get(b"Keep-Alive: timeout=5\r\n")),
    Case("upgrade-h2c", _get(b"Upgrade: h2c\r\n", b"Connection: Upgrade, HTTP2-Settings\r\n",
                             b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n")),
    Case("te-trailers", _get(b"TE: trailers\r\n")),
    Case("expect-continue", _post(b"Expect: 100-continue\r\n", b"Content-Length: 1\r\n",
                                  body=b"Z")),
    Case("long-value", _get(b"X-Probe: " + b"v" * 7000 + b"\r\n")),
    # pipelining
    Case("pipelined", _get() + _get(), expect=2),
    Case("pipelined-get-body", _get(b"Content-Length: 26\r\n",
                                    body=b"GET /evil HTTP/1.1\r\n\r\n\r\n\r\n")),
    Case("pipelined-invalid", _get() + b"Invalid\r\n\r\n", expect=2),  # garden-s45
    Case("pipelined-cl0", _post(b"Content-Length: 0\r\n", body=b"") + _get(), expect=2),
]
