"""The keys a script writes for jwt.verify: JWK or JWKS JSON, or PEM, parsed with joserfc.

Shared by the host's verifier (routing.jwt_verify, which parses a script's keys once per
distinct set) and by registration: `middleware.jwt{keys = ...}` checks its keys while the
script registers (runtime.py hands `key_ok` to identity.lua), so a key that can never work
fails validation at its line instead of every request later. Only a key's position is ever
reported, never its text.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

MAX_JWKS_KEYS = 64  # keys used from one JWKS (a script's or a backend's)
_PEM_TYPES = ("RSA", "EC", "OKP")


def _import(data: Any, key_type: str | None = None) -> Key:
    with warnings.catch_warnings():  # short HMAC secrets: the script's author's choice
        warnings.simplefilter("ignore")
        return JWKRegistry.import_key(data, key_type)


def jwks_keys(value: Any) -> tuple[Key, ...]:
    """The keys of a JWKS object; keys of a type joserfc does not know are skipped (RFC 7517
    section 5). Raises ValueError when it is not a JWKS."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ValueError("not a JWKS: no \"keys\" list")
    keys: list[Key] = []
    for item in value["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(item, dict):
            continue
        try:
            keys.append(_import(item))
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    return tuple(keys)


def parse_key_text(text: str) -> tuple[Key, ...]:
    """The keys of one text: a JWK or a JWKS (JSON), or a PEM public (or private) key.
    Raises ValueError (or a JoseError) when it is none of these."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        if "keys" in value:
            keys = jwks_keys(value)
            if not keys:
                raise ValueError("a JWKS without a usable key")
            return keys
        return (_import(value),)
    if text.startswith("-----BEGIN"):
        data = text.encode("latin-1")
        for key_type in _PEM_TYPES:
            try:
                return (_import(data, key_type),)
            except (JoseError, ValueError, TypeError):
                continue
    raise ValueError("neither a JWK (JSON) nor a PEM key")


def key_ok(text: object) -> bool:
    """Whether `text` holds at least one usable key."""
    if not isinstance(text, str):
        return False
    try:
        return bool(parse_key_text(text))
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError):
        return False
