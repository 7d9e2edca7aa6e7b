import pytest
from django.core.exceptions import ValidationError

from tenants import validators


@pytest.mark.parametrize(
    "value, expected",
    [
        ("API.Example.COM", "api.example.com"),
        ("example.com.", "example.com"),
        ("*.Example.com", "*.example.com"),
        ("localhost", "localhost"),
        ("a-b.c", "a-b.c"),
    ],
)
def test_domains_are_normalised(value, expected):
    assert validators.normalise_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "a b.com", "-bad.com", "bad-.com", "*.com", "a.*.com", "ex_ample.com", "*",
     "a" * 64 + ".com", "x.com/path", "x.com:80", "http://x.com"],
)
def test_invalid_domains_are_refused_with_the_value_in_the_message(value):
    with pytest.raises(ValidationError) as exc:
        validators.normalise_domain(value)
    assert repr(value.strip().lower().rstrip(".")) in exc.value.messages[0] or value == ""


def test_domain_lists_are_deduplicated_and_sorted():
    assert validators.normalise_domains(["B.com", "a.com", "b.com"]) == ["a.com", "b.com"]
    with pytest.raises(ValidationError):
        validators.normalise_domains("a.com")


@pytest.mark.parametrize(
    "value, expected",
    [("", ""), ("/", ""), (None, ""), ("/acme", "/acme"), ("acme/", "/acme"),
     ("/acme/v1/", "/acme/v1")],
)
def test_prefixes_are_normalised(value, expected):
    assert validators.normalise_path_prefix(value) == expected


@pytest.mark.parametrize("value", ["/a//b", "/a/../b", "/./a", "/a b", "/a?x", "/a#x"])
def test_invalid_prefixes_are_refused(value):
    with pytest.raises(ValidationError, match="not a valid path prefix"):
        validators.normalise_path_prefix(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("HTTPS://Api.Example.com/base/", "https://api.example.com/base"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_backend_urls_are_normalised(value, expected):
    assert validators.normalise_backend_url(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("ftp://x.com", "only http"),
        ("http://", "no host"),
        ("http://u:p@x.com", "credentials"),
        ("http://x.com/?a=1", "query or fragment"),
        ("http://x.com:99999", "invalid port"),
        ("http://x.com/a\r\nb", "whitespace or control"),
        ("", "required"),
    ],
)
def test_invalid_backend_urls_are_refused(value, message):
    with pytest.raises(ValidationError, match=message):
        validators.normalise_backend_url(value)


@pytest.mark.parametrize("value", ["Bad", "-x", "x-", "a b", "", "x" * 65])
def test_backend_names_must_be_slug_like(value):
    with pytest.raises(ValidationError):
        validators.validate_backend_name(value)


def test_health_paths():
    assert validators.validate_health_path("") == ""
    assert validators.validate_health_path("/healthz") == "/healthz"
    for bad in ("healthz", "//evil", "/a\nb"):
        with pytest.raises(ValidationError):
            validators.validate_health_path(bad)
