import pytest

from routing.conf import get_conf, parse_networks
from routing.errors import BadRequest, HeadersTooLarge, UriTooLong
from routing.request import check_path, parse_host, parse_scope
from tests.routing.asgi import http_scope


@pytest.mark.parametrize(("value", "host"), [
    ("Acme.Example.COM", "acme.example.com"),
    ("acme.example.com:8080", "acme.example.com"),
    ("acme.example.com.", "acme.example.com"),
    ("acme.example.com.:443", "acme.example.com"),
    ("127.0.0.1:8000", "127.0.0.1"),
    ("[::1]:8000", "[::1]"),
])
def test_host_is_normalised(value, host):
    assert parse_host([value]) == host


@pytest.mark.parametrize("values", [[], ["a.example", "b.example"], ["a b"], [":99999"],
                                    ["a.example:99999"], [""], ["a..b"], ["evil/x"], ["a@b"]])
def test_missing_repeated_or_malformed_host_is_400(values):
    with pytest.raises(BadRequest) as info:
        parse_host(values)
    assert info.value.status == 400


@pytest.mark.parametrize("path", ["/", "/a/b", "/a%2Fb", "/files/a.txt", "/a/.well-known/x",
                                  "/a..b/c", "/%7euser", "/a/...", "/v1.2/x"])
def test_acceptable_paths(path):
    assert check_path(path) == path


@pytest.mark.parametrize("path", [
    "http://evil.example/", "evil", "*", "//evil/x", "///x",
    "/a/../b", "/a/./b", "/..", "/.", "/a/..",
    "/a/%2e%2e/b", "/a/%2E%2E/b", "/a/.%2e/b", "/a/%2e/b", "/public/..%2fadmin",
    "/public/..%2Fadmin", "/a/..\\b", "/a\r\nX: y", "/a\x00", "/a%0d%0aX:%20y", "/a%00b",
])
def test_refused_paths(path):
    with pytest.raises(BadRequest):
        check_path(path)


def test_absolute_form_target_is_400():
    scope = http_scope("http://evil.example/x", raw_path="http://evil.example/x")
    with pytest.raises(BadRequest):
        parse_scope(scope, get_conf())


def test_lower_case_method_is_refused():
    with pytest.raises(BadRequest):
        parse_scope(http_scope("/", method="get"), get_conf())


def test_raw_path_and_query_are_kept_as_sent():
    scope = http_scope("/a/b c", raw_path="/a%2Fb/%7e%20c", query="x=%20&y=%2f&y=2")
    request = parse_scope(scope, get_conf())
    assert request.raw_path == "/a%2Fb/%7e%20c"
    assert request.query == "x=%20&y=%2f&y=2"


def test_too_long_path_and_headers():
    conf = get_conf()
    with pytest.raises(UriTooLong) as info:
        parse_scope(http_scope("/" + "a" * conf.max_path_bytes), conf)
    assert info.value.status == 414
    with pytest.raises(HeadersTooLarge) as info:
        parse_scope(http_scope("/", headers=[("x-big", "a" * conf.max_header_bytes)]), conf)
    assert info.value.status == 431


def test_request_id_kept_when_valid_else_generated():
    conf = get_conf()
    kept = parse_scope(http_scope("/", headers=[("x-request-id", "abc-123:x.y_z")]), conf)
    assert kept.request_id == "abc-123:x.y_z"
    for bad in ["", "has space", "x" * 129, "semi;colon", "é"]:
        generated = parse_scope(http_scope("/", headers=[("x-request-id", bad)]), conf)
        assert generated.request_id != bad
        assert len(generated.request_id) == 32


def test_hop_by_hop_and_connection_named_headers_are_gone_before_the_script():
    scope = http_scope("/", headers=[("connection", "close, X-Secret"), ("x-secret", "s"),
                                     ("keep-alive", "1"), ("te", "trailers"), ("x-ok", "1")])
    names = [name for name, _ in parse_scope(scope, get_conf()).headers]
    assert "x-secret" not in names and "connection" not in names
    assert "keep-alive" not in names and "te" not in names
    assert "x-ok" in names


def test_spoofed_forwarded_for_is_not_the_client_ip(settings):
    scope = http_scope("/", headers=[("x-forwarded-for", "1.2.3.4")], client="203.0.113.9")
    assert parse_scope(scope, get_conf()).client_ip == "203.0.113.9"


def test_trusted_proxies_walk_from_the_right(settings):
    settings.CHISTONE = {**settings.CHISTONE, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    conf = get_conf()
    assert conf.trusted_proxies == parse_networks(["10.0.0.0/8"])
    scope = http_scope("/", client="10.0.0.2",
                       headers=[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.5"),
                                ("x-forwarded-proto", "https")])
    request = parse_scope(scope, conf)
    assert request.client_ip == "198.51.100.7"
    assert request.forwarded_proto == "https"  # believed from a trusted peer only
    untrusted = parse_scope(http_scope("/", headers=[("x-forwarded-proto", "https")]), conf)
    assert untrusted.forwarded_proto == "http"


def test_a_port_on_the_forwarded_client_is_dropped(settings):
    settings.CHISTONE = {**settings.CHISTONE, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    scope = http_scope("/", client="10.0.0.2", headers=[("x-forwarded-for", "203.0.113.7:5555")])
    assert parse_scope(scope, get_conf()).client_ip == "203.0.113.7"


def test_forwarded_mode_reads_rfc_7239_and_ignores_x_forwarded_for(settings):
    settings.CHISTONE = {**settings.CHISTONE, "TRUSTED_PROXIES": ["10.0.0.0/8"],
                         "FORWARDED_HEADER": "forwarded"}
    scope = http_scope("/", client="10.0.0.2", headers=[
        ("x-forwarded-for", "6.6.6.6"), ("x-forwarded-proto", "http"),
        ("forwarded", 'for="[2001:db8::7]:4711";proto=https')])
    request = parse_scope(scope, get_conf())
    assert request.client_ip == "2001:db8::7"
    assert request.forwarded_proto == "https"
@pytest.mark.parametrize("value", ["a\x01b", "a\x00b", "a\x7fb", "a\x0bb", "a\x0cb", "\x1fa",
                                   "a\x1b[31mred", "chunked\x08"])
def test_header_value_with_a_control_character_is_400(value):
    """`X: a\\x01b` passes Twisted and would make the upstream client raise (a 500)."""
    with pytest.raises(BadRequest) as info:
        parse_scope(http_scope("/", headers=[("x-thing", value)]), get_conf())
    assert info.value.status == 400 and "x-thing" in info.value.detail


@pytest.mark.parametrize("raw", [b"a\tb", "café ☕".encode(), b"a b", "\xa0x".encode()])
def test_header_values_with_tab_or_utf8_pass_as_sent(raw):
    scope = http_scope("/")
    scope["headers"].append((b"x-thing", raw))
    request = parse_scope(scope, get_conf())
    assert ("x-thing", raw.decode("latin-1")) in request.headers  # one character per byte


@pytest.mark.parametrize("raw", [b"caf\xe9", b"\x80\xff", b"\xa0x", b"\xc3"])
def test_header_values_with_bytes_above_0x7f_that_are_not_utf8_are_400(raw):
    """The upstream client writes values as UTF-8: these bytes could not reach the backend."""
    scope = http_scope("/")
    scope["headers"].append((b"x-thing", raw))
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        parse_scope(scope, get_conf())


@pytest.mark.parametrize(("value", "version"), [("identity", "1.1"), ("gzip, chunked", "1.1"),
                                                ("chunked", "1.0"), ("xchunked", "1.1")])
def test_transfer_encoding_other_than_chunked_on_http11_is_400(value, version):
    scope = http_scope("/", headers=[("transfer-encoding", value)])
    scope["http_version"] = version
    with pytest.raises(BadRequest):
        parse_scope(scope, get_conf())
    scope = http_scope("/", headers=[("transfer-encoding", "Chunked")])
    assert "transfer-encoding" not in dict(parse_scope(scope, get_conf()).headers)


@pytest.mark.parametrize("name", [b"x thing", b"x\x01", b"x:y", b"", b"\xe9", b"x(y)",
                                  b"x\ty", b"x/y", b"x@y", b"x\"y"])
def test_header_name_that_is_not_a_token_is_400(name):
    scope = http_scope("/")
    scope["headers"].append((name, b"v"))
    with pytest.raises(BadRequest) as info:
        parse_scope(scope, get_conf())
    assert "token" in info.value.detail


def test_header_names_come_out_lower_case_and_a_bad_name_is_refused_every_time():
    # Valid names are remembered (routing.request._NAMES): the second request takes the
    # remembered form, and a refused name is never remembered.
    for _ in range(2):
        scope = http_scope("/")
        scope["headers"].append((b"X-Mixed-Case", b"v"))
        assert ("x-mixed-case", "v") in parse_scope(scope, get_conf()).headers
        scope["headers"].append((b"X Bad", b"v"))
        with pytest.raises(BadRequest):
            parse_scope(scope, get_conf())


@pytest.mark.parametrize("path", ["/a\x01b", "/a b", "/a\tb", "/a\x7f", "/a\x1b", "/a#frag"])
def test_path_with_a_space_or_control_character_is_400(path):
    with pytest.raises(BadRequest):
        check_path(path)


@pytest.mark.parametrize("query", ["a=\x01", "a=b c", "a=\x7f", "a#frag", "a=\x00"])
def test_client_query_with_a_control_character_is_400(query):
    with pytest.raises(BadRequest):
        parse_scope(http_scope("/", query=query), get_conf())
