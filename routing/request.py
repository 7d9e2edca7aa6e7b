"""What the client asked for, validated once: method, raw path, query, host, ids, headers.

Paths: daphne hands over `scope["path"]` percent-decoded and `scope["raw_path"]` as sent.
The gateway routes and forwards on the raw path only, and refuses (400) a raw path that
contains CR, LF or NUL (raw or percent-encoded), does not start with "/", starts with "//",
or contains a dot segment ("." or ".."), including encoded forms such as `%2e%2e` and
segments that only become dot segments once `%2f` or a backslash is decoded
(`/public/..%2fadmin`). A backend therefore never has to agree with the gateway about what
such a path means: it never receives one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from luascripts.engine.build import fast_constructor
from routing.conf import GatewayConf
from routing.errors import BadRequest, HeadersTooLarge, UriTooLong
from routing.headers import HOP_BY_HOP, connection_named, is_field_name, is_field_value
from routing.request_id import accept_or_new
from routing.types import Scope

_HOST_RE = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}))(?::(?P<port>[0-9]{1,5}))?"
)
_ENCODED_CONTROL = re.compile(r"%(?:0[aAdD0]|00)")
_BAD_QUERY = re.compile(r"[\x00-\x20\x7f#]")
_PATH_CONTROL = re.compile(r"[\x00-\x20\x7f#]")
_SPECIAL = HOP_BY_HOP | {"host", "x-forwarded-for", "x-request-id", "x-forwarded-proto",
                         "forwarded"}
_METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """The parts of one client request the gateway works with (all `str`, raw forms)."""

    method: str
    raw_path: str  # as sent, percent-encoding intact
    query: str  # raw query string without "?"
    host: str  # normalised: lower-case, no port, no trailing dot
    host_header: str  # the Host header as sent
    scheme: str
    peer: str  # the address that connected to the gateway
    client_ip: str  # behind trusted proxies, the client they name (routing.forwarded)
    forwarded_for: str | None  # the client's X-Forwarded-For, joined
    forwarded_proto: str  # the scheme, or the one a trusted proxy reports
    request_id: str
    headers: tuple[tuple[str, str], ...] = field(default=())  # lower-case, hop-by-hop removed


# Header names as the server hands them over -> the lower-case text the gateway works with,
# for names already found valid: one lookup per header instead of a decode, a lower() and a
# token check. Bounded, like routing.headers' memo of valid names.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 4096


def _header_name(raw: bytes) -> str:
    """A request header's name, lower-case (ASGI servers send lower-case names; not all do);
    400 when it is not a token."""
    name = raw.decode("latin-1").lower()
    if not is_field_name(name):
        raise BadRequest("A request header name is not a valid HTTP token.")
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = name
    return name


# Built for every request: the same frozen object, without the dataclass __init__'s cost.
_new_request = fast_constructor(ClientRequest)


def parse_host(values: list[str]) -> str:
    """The normalised host of a request's Host header(s); 400 when missing, repeated or bad."""
    if not values:
        raise BadRequest("The request has no Host header.")
    if len(values) > 1:
        raise BadRequest("The request has more than one Host header.")
    value = values[0].strip()
    match = _HOST_RE.fullmatch(value)
    if match is None:
        raise BadRequest("The Host header is malformed.")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise BadRequest("The Host header has an invalid port.")
    host = match.group("host").lower()
    if host.endswith("."):
        host = host.rstrip(".")
    if not host or ".." in host:
        raise BadRequest("The Host header is malformed.")
    return host


def check_path(path: str) -> str:
    """Return `path` if it is an acceptable raw path (see the module docstring), else 400."""
    if not path.startswith("/") or path.startswith("//"):
        raise BadRequest("The request path must start with exactly one '/'.")
    if _PATH_CONTROL.search(path) is not None:
        raise BadRequest("The request path contains a space, a control character or '#'.")
    if "%" in path or "." in path or "\\" in path:
        if "%" in path and _ENCODED_CONTROL.search(path):
            raise BadRequest("The request path contains an encoded control character.")
        decoded = unquote(path, errors="replace") if "%" in path else path
        for segment in decoded.replace("\\", "/").split("/"):
            if segment == "." or segment == "..":
                raise BadRequest("The request path contains a '.' or '..' segment.")
    return path


def check_query(query: str) -> str:
    if _BAD_QUERY.search(query):
        raise BadRequest("The query string contains a space, '#' or a control character.")
    return query


def check_transfer_encoding(value: str, http_version: str) -> None:
    """The server de-chunked the body; refuse what it should not have accepted (400): a
    coding other than `chunked` (`identity` is no coding any more, RFC 9112 7), or any
    Transfer-Encoding on an HTTP/1.0 request, whose framing is then faulty (RFC 9112 6.1)."""
    if http_version == "1.0":
        raise BadRequest("An HTTP/1.0 request cannot carry Transfer-Encoding.")
    if value.strip().lower() != "chunked":
        raise BadRequest("The only transfer coding accepted is 'chunked'.")


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse_scope(scope: Scope, conf: GatewayConf) -> ClientRequest:
    """Validate an ASGI http scope into a ClientRequest, or raise a 4xx GatewayError.

    Methods are case-sensitive (RFC 9110): `get` is not GET, and one is refused (400) rather
    than routed as the other.
    """
    method = scope["method"]
    if _METHOD_RE.fullmatch(method) is None:
        raise BadRequest("The request method must be an upper-case token.")
    raw = scope.get("raw_path")
    if raw is None:
        path = quote(scope.get("path", ""), safe="/:@!$&'()*+,;=-._~%")
    else:
        try:
            path = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("The request path is not ASCII.") from None
    if "?" in path:  # some servers leave the query on raw_path
        path = path.split("?", 1)[0]
    if len(path) > conf.max_path_bytes:
        raise UriTooLong(f"The request path is longer than {conf.max_path_bytes} bytes.")
    check_path(path)
    query = scope.get("query_string", b"").decode("latin-1")
    if len(query) > conf.max_path_bytes:
        raise UriTooLong(f"The query string is longer than {conf.max_path_bytes} bytes.")
    if query:
        check_query(query)

    headers: list[tuple[str, str]] = []
    hosts: list[str] = []
    xff: list[str] = []
    forwarded: list[str] = []
    xfp = ""
    request_id = ""
    size = 0
    connection: list[str] | None = None
    for name_b, value_b in scope.get("headers", ()):
        # Whatever the server let through, a name that is not a token or a value with a
        # control character (`X: a\x01b`) stops here with a 400: the upstream client would
        # raise on it (a 500) or pass it on to the backend (a desync or an injection).
        name = _NAMES.get(name_b)
        if name is None:
            name = _header_name(name_b)
        value = value_b.decode("latin-1")
        if not value.isprintable() and not is_field_value(value):
            raise BadRequest(f"The request header {name!r} contains a control character.")
        if not value.isascii() and not _utf8(value_b):
            # The upstream client sends header values as UTF-8 text: other bytes above 0x7f
            # could not reach the backend as they came.
            raise BadRequest(f"The request header {name!r} is not valid UTF-8.")
        size += len(name) + len(value) + 4
        if name in _SPECIAL:
            if name == "host":
                hosts.append(value)
            elif name == "x-forwarded-for":
                xff.append(value)
            elif name == "forwarded":
                forwarded.append(value)
            elif name == "x-request-id":
                request_id = value.strip()
            elif name == "x-forwarded-proto":
                xfp = value
            elif name == "connection":
                connection = connection or []
                connection.append(value)
                continue
            elif name == "transfer-encoding":
                check_transfer_encoding(value, scope.get("http_version", "1.1"))
                continue
            elif name in HOP_BY_HOP:
                continue
        headers.append((name, value))
    if connection:
        named = connection_named(connection)
        headers = [(name, value) for name, value in headers if name not in named]
    if size > conf.max_header_bytes:
        raise HeadersTooLarge(f"The request headers exceed {conf.max_header_bytes} bytes.")
    host = parse_host(hosts)
    client = scope.get("client") or ("0.0.0.0", 0)
    peer = str(client[0])
    forwarded_for = ", ".join(xff) if xff else None
    scheme = scope.get("scheme", "http")
    proxies = conf.proxies
    return _new_request(
        method=method,
        raw_path=path,
        query=query,
        host=host,
        host_header=hosts[0].strip(),
        scheme=scheme,
        peer=peer,
        client_ip=proxies.client(peer, x_forwarded_for=xff, forwarded=forwarded),
        forwarded_for=forwarded_for,
        forwarded_proto=proxies.scheme(peer, scheme, x_forwarded_proto=xfp, forwarded=forwarded),
        request_id=accept_or_new(request_id),
        headers=tuple(headers),
    )
