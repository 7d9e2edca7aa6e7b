"""Request ids: the one format both planes accept from a client, and the one they make.

A client's (or a front proxy's) `X-Request-ID` is kept when it is 1-128 characters of
letters, digits and `._:-`, so ids can be followed across systems; anything else is replaced
by a new id (32 hex digits) rather than copied into logs and backend requests.
"""

from __future__ import annotations

import re
import uuid

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_request_id(value: str | None) -> bool:
    return bool(value) and _VALID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_or_new(value: str | None) -> str:
    """The given id (surrounding spaces removed) when it is valid, else a new one."""
    value = value.strip() if value else ""
    return value if valid_request_id(value) else new_request_id()
