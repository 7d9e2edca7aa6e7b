"""Normalisation and validation of tenant-supplied names, hosts, prefixes and URLs.

Pure functions with no Django model imports: services and serializers call them, and the
error messages are written for the operator who typed the value.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
BACKEND_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")


def validate_slug(value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid slug: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit.",
            code="invalid_slug",
        )
    return value


def validate_backend_name(value: str) -> str:
    if not isinstance(value, str) or not BACKEND_NAME_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid backend name: use 1-64 lower-case letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit.",
            code="invalid_backend_name",
        )
    return value


def normalise_domain(value: str) -> str:
    """Lower-case a hostname or `*.wildcard` and check each label (RFC 1123)."""
    if not isinstance(value, str):
        raise ValidationError("A domain must be a string.", code="invalid_domain")
    host = value.strip().lower().rstrip(".")
    if not host or len(host) > 253:
        raise ValidationError(f"{value!r} is not a valid hostname.", code="invalid_domain")
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise ValidationError(
                f"{value!r}: a wildcard needs at least two labels after '*.' (e.g. *.example.com).",
                code="invalid_domain",
            )
    for label in labels:
        if not _LABEL_RE.match(label):
            raise ValidationError(
                f"{value!r} is not a valid hostname: label {label!r} must be 1-63 letters, "
                "digits or '-' and may not start or end with '-'. Wildcards are only allowed "
                "as a whole first label ('*.example.com').",
                code="invalid_domain",
            )
    return host


def normalise_domains(values: list[str] | tuple[str, ...] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValidationError("domains must be a list of hostnames.", code="invalid_domain")
    result: list[str] = []
    for value in values:
        host = normalise_domain(value)
        if host not in result:
            result.append(host)
    return sorted(result)


def normalise_path_prefix(value: str | None) -> str:
    """`""` or `/seg[/seg...]`: one leading slash, no trailing slash, no empty or dot segments."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("path_prefix must be a string.", code="invalid_prefix")
    prefix = value.strip()
    if prefix in ("", "/"):
        return ""
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    prefix = prefix.rstrip("/")
    for segment in prefix[1:].split("/"):
        if segment in ("", ".", "..") or not _SEGMENT_RE.match(segment):
            raise ValidationError(
                f"{value!r} is not a valid path prefix: use '/segment[/segment...]' with no empty, "
                "'.' or '..' segments and only URL path characters.",
                code="invalid_prefix",
            )
    return prefix


def normalise_backend_url(value: str) -> str:
    """An http(s) origin plus an optional base path; no query, fragment or credentials."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("A backend URL is required.", code="invalid_url")
    url = value.strip()
    if any(ch in url for ch in "\r\n\x00\t "):
        raise ValidationError("A backend URL may not contain whitespace or control characters.",
                              code="invalid_url")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(f"{value!r}: only http:// and https:// backends are supported.",
                              code="invalid_url")
    if not parts.hostname:
        raise ValidationError(f"{value!r} has no host.", code="invalid_url")
    if parts.username or parts.password:
        raise ValidationError(f"{value!r}: credentials in backend URLs are not allowed.",
                              code="invalid_url")
    if parts.query or parts.fragment:
        raise ValidationError(f"{value!r}: a backend URL may not have a query or fragment.",
                              code="invalid_url")
    try:
        port = parts.port
    except ValueError:
        raise ValidationError(f"{value!r} has an invalid port.", code="invalid_url") from None
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{parts.scheme.lower()}://{netloc}{path}"


def validate_health_path(value: str | None) -> str:
    if not value:
        return ""
    if not value.startswith("/") or value.startswith("//") or any(c in value for c in "\r\n\x00 #"):
        raise ValidationError(
            f"{value!r} is not a valid health-check path: it must start with a single '/'.",
            code="invalid_health_path",
        )
    return value


MIN_BODY_LIMIT = 1024
MAX_BODY_LIMIT = 16 * 1024 * 1024  # bodies a script holds count against its runtime's memory


def body_limit(value: object) -> int | None:
    """A tenant's body limit for scripts: None (the default) or 1 KiB to 16 MiB."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("A body limit is a number of bytes, or null for the default.")
    if not MIN_BODY_LIMIT <= value <= MAX_BODY_LIMIT:
        raise ValidationError(f"A body limit must be from {MIN_BODY_LIMIT} to "
                              f"{MAX_BODY_LIMIT} bytes.")
    return value
