"""luascripts.engine.keys: which texts are keys (JWK, JWKS, PEM), with keys made by joserfc."""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from luascripts.engine.keys import MAX_JWKS_KEYS, jwks_keys, key_ok, parse_key_text

RSA = RSAKey.generate_key(2048)


@pytest.mark.parametrize("key", [RSA, ECKey.generate_key("P-256"),
                                 OKPKey.generate_key("Ed25519")])
def test_pem_public_and_private_keys(key) -> None:
    assert key_ok(key.as_pem(private=False).decode())
    assert key_ok(key.as_pem(private=True).decode())


def test_jwk_and_jwks_texts() -> None:
    oct_jwk = json.dumps(OctKey.generate_key(256).as_dict(private=True))
    assert key_ok(oct_jwk)
    jwks = json.dumps({"keys": [RSA.as_dict(private=False), {"kty": "unknown"}, "junk"]})
    assert len(parse_key_text(jwks)) == 1  # unknown types are skipped (RFC 7517 section 5)


@pytest.mark.parametrize("text", ["", "secret", "{}", "[1]", '{"kty": "RSA"}',
                                  '{"keys": [{"kty": "nope"}]}', "{not json",
                                  "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                                  None, 42])
def test_what_is_not_a_key(text) -> None:
    assert not key_ok(text)


def test_a_jwks_is_bounded() -> None:
    many = {"keys": [OctKey.generate_key(256).as_dict(private=True)
                     for _ in range(MAX_JWKS_KEYS + 5)]}
    assert len(jwks_keys(many)) == MAX_JWKS_KEYS
    with pytest.raises(ValueError):
        jwks_keys({"no": "keys"})
