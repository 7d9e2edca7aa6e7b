import pytest

from routing.errors import InvalidResponse
from routing.headers import (
    downstream_headers,
    is_field_name,
    is_field_value,
    upstream_request_headers,
)


def _up(headers, **kw):
    args = dict(host="backend.internal:9000", forwarded_for=None, peer="203.0.113.9",
                forwarded_host="acme.example.com", proto="http", client="203.0.113.9",
                request_id="rid")
    args.update(kw)
    return upstream_request_headers(headers, **args)


def test_connection_cannot_delete_the_gateways_own_headers():
    out = _up([("connection", "X-Forwarded-For, x-request-id"), ("x-forwarded-for", "6.6.6.6")])
    as_dict = dict(out)
    assert as_dict["x-forwarded-for"] == "203.0.113.9"
    assert as_dict["x-request-id"] == "rid"
    assert "connection" not in as_dict


def test_forwarding_headers_appended_or_replaced():
    out = _up([("x-forwarded-proto", "https"), ("x-forwarded-host", "evil"),
               ("forwarded", "for=6.6.6.6"), ("host", "client-host"), ("x-keep", "1")],
              forwarded_for="1.2.3.4")
    d = dict(out)
    assert d["x-forwarded-for"] == "1.2.3.4, 203.0.113.9"
    assert d["x-forwarded-proto"] == "http"
    assert d["x-forwarded-host"] == "acme.example.com"
    assert d["forwarded"] == 'for="203.0.113.9";host="acme.example.com";proto=http'
    assert d["host"] == "backend.internal:9000"
    assert [n for n, _ in out].count("host") == 1
    assert d["x-keep"] == "1"


def test_upstream_drops_hop_by_hop_set_and_framing():
    out = dict(_up([("keep-alive", "x"), ("proxy-authorization", "secret"), ("upgrade", "h2c"),
                    ("transfer-encoding", "chunked"), ("content-length", "9"), ("te", "x"),
                    ("trailer", "x"), ("proxy-connection", "x"), ("expect", "100-continue")]))
    for name in ("keep-alive", "proxy-authorization", "upgrade", "transfer-encoding",
                 "content-length", "te", "trailer", "proxy-connection", "expect"):
        assert name not in out


def test_downstream_strips_hop_by_hop_and_reframes():
    raw = [(b"Content-Length", b"10"), (b"Transfer-Encoding", b"chunked"),
           (b"Connection", b"keep-alive, X-Internal"), (b"X-Internal", b"secret"),
           (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Keep-Alive", b"timeout=5"),
           (b"X-Request-ID", b"backend-id"), (b"Content-Encoding", b"gzip")]
    out = downstream_headers(raw, request_id="rid")
    names = [n for n, _ in out]
    assert b"content-length" not in names and b"transfer-encoding" not in names
    assert b"x-internal" not in names and b"keep-alive" not in names
    assert [v for n, v in out if n == b"set-cookie"] == [b"a=1", b"b=2"]
    assert (b"content-encoding", b"gzip") in out
    assert [v for n, v in out if n == b"x-request-id"] == [b"rid"]


def test_downstream_keeps_content_length_without_transfer_encoding():
    out = downstream_headers([(b"Content-Length", b"10")], request_id="r")
    assert (b"content-length", b"10") in out


@pytest.mark.parametrize(("name", "value"), [
    (b"X-Bad", b"a\x01b"), (b"X-Bad", b"a\x00b"), (b"X-Bad", b"a\rb"), (b"X-Bad", b"a\nb"),
    (b"X-Bad", b"\x7f"), (b"X Bad", b"v"), (b"X-Bad:", b"v"), (b"", b"v"), (b"X\x01", b"v"),
    (b"Content-Length ", b"3"),
])
def test_a_response_header_that_cannot_be_framed_is_a_502(name, value):
    with pytest.raises(InvalidResponse) as info:
        downstream_headers([(b"Content-Type", b"text/plain"), (name, value)], request_id="r")
    assert info.value.status == 502 and info.value.code == "backend_broke"


def test_tab_and_obs_text_in_response_values_pass():
    out = downstream_headers([(b"X-A", b"a\tb"), (b"X-B", b"caf\xe9")], request_id="r")
    assert (b"x-a", b"a\tb") in out and (b"x-b", b"caf\xe9") in out


@pytest.mark.parametrize(("name", "ok"), [("x-ok", True), ("X_Under.score~!#$%&'*+^`|", True),
                                          ("", False), ("a b", False), ("a:b", False),
                                          ("\xe9", False), ("a\x00", False)])
def test_field_name_is_a_token(name, ok):
    assert is_field_name(name) is ok
    assert is_field_name(name) is ok  # again, from the cache of known names


@pytest.mark.parametrize(("value", "ok"), [("plain", True), ("a\tb", True), ("\x80\xff", True),
                                           ("", True), ("a\x01", False), ("\x00", False),
                                           ("a\r\nb", False), ("\x7f", False)])
def test_field_value_has_no_control_character_but_tab(value, ok):
    assert is_field_value(value) is ok
