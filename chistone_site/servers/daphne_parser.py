"""Twisted's HTTP/1.1 parser, as daphne runs it, made to answer or refuse at once, in JSON.

Before the gateway sees a request, Twisted parses it and daphne checks its header bytes; what
they refuse, they answer themselves, and a few inputs left the client waiting for ever. In
a worker process (`serve()` in chistone_site/servers/daphne.py) `install()` changes that:

- **JSON refusals.** Twisted answers what it cannot parse (a malformed request line or
  header, ambiguous framing: Content-Length with Transfer-Encoding, two lengths, a bad chunk
  size, ...) in `HTTPChannel._respondToBadRequestAndDisconnect` with a bare
  `400 Bad Request`; daphne answers invalid header names and values, non-ASCII paths, its own
  failures and timeouts with an HTML page (`WebRequest.basic_error`). Both now give
  `{"error", "detail", "request_id"}` answers like the gateway's.
- **No obsolete line folding.** Twisted joins a header line that starts with whitespace to
  the one before; it is refused instead (RFC 9112 5.2 allows either; nginx refuses).
- **No waiting for ever.** Twisted ends lines at CRLF only, so a request head that uses a
  bare LF (`GET / HTTP/1.1\\nHost: a\\n\\n`) stayed an incomplete line: it is refused (400)
  as soon as the LF arrives, like any other bare LF in a head. A Content-Length or a chunk
  size above 2^63-1 (nginx's limit) made Twisted wait for a body that cannot come: refused.

Each hook is checked before it is replaced: if an upgrade of Twisted or daphne renamed one,
`install()` raises `AdapterError` and the worker does not start
(tests/chistone_site/servers/test_daphne_parser.py shows the same in the test run).
"""

from __future__ import annotations

from typing import Any

MALFORMED_DETAIL = ("The request is not valid HTTP/1.1 (its request line, a header or its "
                    "framing is malformed or ambiguous).")
MAX_LENGTH = 2**63 - 1
_ERROR_CODES = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large",
                431: "headers_too_large", 503: "unavailable"}
_installed = False


def json_error(status: int, code: str, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a JSON error answer with a fresh request id."""
    from routing.errors import json_body
    from routing.request_id import new_request_id

    request_id = new_request_id()
    body = json_body(code, detail, request_id)
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", request_id.encode())], body


def hooks() -> dict[str, tuple[Any, str]]:
    """What `install()` replaces: {description: (owner, attribute)}."""
    from daphne.http_protocol import WebRequest
    from twisted.web import http

    return {
        "Twisted's bad-request answer": (http.HTTPChannel, "_respondToBadRequestAndDisconnect"),
        "daphne's error page": (WebRequest, "basic_error"),
        "Twisted's line reader": (http.HTTPChannel, "dataReceived"),
        "Twisted's head line parser": (http.HTTPChannel, "lineReceived"),
        "Twisted's framing header check": (http.HTTPChannel, "_maybeChooseTransferDecoder"),
        "Twisted's chunk-size parser": (http, "_hexint"),
    }


def missing_hooks() -> list[str]:
    from twisted.protocols.basic import LineReceiver

    gone = [name for name, (owner, attribute) in hooks().items()
            if not callable(getattr(owner, attribute, None))]
    if not hasattr(LineReceiver, "line_mode") or not hasattr(LineReceiver, "_buffer"):
        gone.append("LineReceiver's line_mode and _buffer")
    return gone


def install() -> None:
    global _installed
    if _installed:
        return
    from daphne.http_protocol import WebRequest
    from twisted.web import http

    from chistone_site.servers import AdapterError

    gone = missing_hooks()
    if gone:
        raise AdapterError(f"daphne/Twisted no longer have {gone}: chistone_site/servers/"
                           f"daphne_parser.py must follow the upgrade")

    def respond_bad_request(channel: Any) -> None:
        headers, body = json_error(400, "bad_request", MALFORMED_DETAIL)
        head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        channel.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head
                                + b"connection: close\r\n\r\n" + body)
        channel.loseConnection()

    def basic_error(request: Any, status: int, status_text: bytes, detail: str) -> None:
        code = _ERROR_CODES.get(status, "internal_error")
        headers, body = json_error(status, code, detail if status < 500 else
                                   "The server failed while handling this request.")
        request.handle_reply({"type": "http.response.start", "status": status,
                              "headers": headers})
        request.handle_reply({"type": "http.response.body", "body": body})

    data_received = http.HTTPChannel.dataReceived

    def strict_data_received(channel: Any, data: bytes) -> None:
        data_received(channel, data)
        # Lines end at CRLF: what is left unprocessed holds no CRLF, so an LF in it is bare.
        if channel.line_mode and b"\n" in channel._buffer \
                and not getattr(channel.transport, "disconnecting", False):
            channel._buffer = b""
            channel._respondToBadRequestAndDisconnect()

    line_received = http.HTTPChannel.lineReceived

    def strict_line_received(channel: Any, line: bytes) -> None:
        # A head line that starts with whitespace is obsolete line folding (or a request line
        # that does not start with its method): refused, as RFC 9112 5.2 allows and nginx does.
        if line[:1] in (b" ", b"\t"):
            channel._respondToBadRequestAndDisconnect()
            return
        line_received(channel, line)

    choose = http.HTTPChannel._maybeChooseTransferDecoder

    def bounded_choose(channel: Any, header: bytes, data: bytes) -> bool:
        if header == b"Content-Length" and data.isdigit() and int(data) > MAX_LENGTH:
            return channel._failChooseTransferDecoder()
        return choose(channel, header, data)

    hexint = http._hexint

    def bounded_hexint(value: bytes) -> int:
        number = hexint(value)
        if number > MAX_LENGTH:
            raise ValueError("chunk size too large")
        return number

    http.HTTPChannel._respondToBadRequestAndDisconnect = respond_bad_request
    # Reason phrases Twisted lacks ("429 Unknown Status" otherwise: rate limits answer 429).
    from http import HTTPStatus

    for known in HTTPStatus:
        http.RESPONSES.setdefault(known.value, known.phrase.encode("ascii"))
    WebRequest.basic_error = basic_error
    http.HTTPChannel.dataReceived = strict_data_received
    http.HTTPChannel.lineReceived = strict_line_received
    http.HTTPChannel._maybeChooseTransferDecoder = bounded_choose
    http._hexint = bounded_hexint
    _installed = True
