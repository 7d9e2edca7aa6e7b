"""routing.jwt_verify: the verifier with keys generated here by joserfc, and the JWKS cache
against a real HTTP backend on loopback whose JWKS changes mid-test."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from luascripts.engine.effects import JwtAnswer, VerifyJwt
from routing.jwt_verify import (
    ALGORITHMS,
    REASONS,
    InvalidKey,
    JwksCache,
    inline_keys,
    max_age,
    verify,
    verify_effect,
)

NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key, alg: str, claims: dict | None = None, **header) -> str:
    body = {"sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": NOW + 60,
            **(claims or {})}
    return jwt.encode({"alg": alg, **header}, body, key, algorithms=[alg])


def pem(key) -> str:
    return key.as_pem(private=False).decode()


def jwk(key, **extra) -> str:
    return json.dumps({**key.as_dict(private=False), **extra})


KEYS = {
    "RS256": RSAKey.generate_key(2048),
    "ES256": ECKey.generate_key("P-256"),
    "EdDSA": OKPKey.generate_key("Ed25519"),
    "HS256": OctKey.generate_key(256),
}


def check(token: str, key_texts: tuple[str, ...], algorithms=ALGORITHMS, **kw):
    return verify(token, inline_keys(key_texts), algorithms=algorithms, now=NOW, **kw)


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_a_valid_token_gives_its_claims(alg: str) -> None:
    key = KEYS[alg]
    text = jwk(key) if alg == "HS256" else pem(key)
    verdict = check(mint(key, alg), (text,), issuer="https://idp.test", audience=("api",))
    assert verdict.reason is None
    assert verdict.claims["sub"] == "alice"


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_a_key_given_as_jwk_json_or_in_a_jwks_works_too(alg: str) -> None:
    key = KEYS[alg]
    token = mint(key, alg)
    assert check(token, (jwk(key),)).claims is not None
    jwks = json.dumps({"keys": [json.loads(jwk(key))]})
    assert check(token, (jwks,)).claims is not None


@pytest.mark.parametrize(("claims", "kw", "reason"), [
    ({"exp": NOW - 1}, {}, "expired"),
    ({"exp": NOW}, {}, "expired"),  # "on or after" exp
    ({"nbf": NOW + 30}, {}, "not_yet_valid"),
    ({"iss": "https://evil.test"}, {"issuer": "https://idp.test"}, "bad_issuer"),
    ({"aud": "other"}, {"audience": ("api",)}, "bad_audience"),
    ({"aud": ["x", "y"]}, {"audience": ("api", "z")}, "bad_audience"),
    ({"exp": "tomorrow"}, {}, "malformed"),
])
def test_claims_are_checked(claims, kw, reason) -> None:
    key = KEYS["RS256"]
    assert check(mint(key, "RS256", claims), (pem(key),), **kw).reason == reason


def test_leeway_and_audience_lists() -> None:
    key = KEYS["ES256"]
    late = mint(key, "ES256", {"exp": NOW - 20, "aud": ["x", "api"]})
    assert check(late, (pem(key),)).reason == "expired"
    assert check(late, (pem(key),), leeway_s=30, audience=("api",)).claims is not None
    early = mint(key, "ES256", {"nbf": NOW + 20})
    assert check(early, (pem(key),), leeway_s=30).claims is not None


def test_a_token_signed_by_another_key_fails() -> None:
    other = RSAKey.generate_key(2048)
    token = mint(other, "RS256")
    assert check(token, (pem(KEYS["RS256"]),)).reason == "bad_signature"
    hs = mint(OctKey.generate_key(256), "HS256")
    assert check(hs, (jwk(KEYS["HS256"]),)).reason == "bad_signature"


def unsigned(claims: dict) -> str:
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}." \
           f"{b64(json.dumps(claims).encode())}."


def test_alg_none_is_never_accepted() -> None:
    token = unsigned({"sub": "root", "exp": NOW + 60})
    assert check(token, (pem(KEYS["RS256"]),)).reason == "algorithm_not_allowed"
    # Whatever the caller lists.
    assert verify(token, inline_keys((pem(KEYS["RS256"]),)), algorithms=("none",),
                  now=NOW).reason == "algorithm_not_allowed"


def test_algorithm_confusion_hs256_with_the_rsa_public_key_as_secret_fails() -> None:
    # The classic attack: sign HS256 with the bytes of the server's RSA public key (PEM),
    # hoping the verifier uses "the key" as an HMAC secret. joserfc itself refuses to make
    # such an oct key, so the attacker's token is made by hand.
    public = pem(KEYS["RS256"])
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}." \
                    f"{b64(json.dumps({'sub': 'root', 'exp': NOW + 60}).encode())}"
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    for texts in ((public,), (jwk(KEYS["RS256"]),)):
        verdict = check(token, texts)
        assert verdict.claims is None
        assert verdict.reason == "unknown_key"  # no key of the HS256 type at all
    # Restricting the algorithms refuses it earlier.
    assert check(token, (public,), algorithms=("RS256",)).reason == "algorithm_not_allowed"


def test_a_key_of_the_wrong_curve_or_alg_is_not_used() -> None:
    p384 = ECKey.generate_key("P-384")
    token = jwt.encode({"alg": "ES256"}, {"sub": "a"}, KEYS["ES256"], algorithms=["ES256"])
    assert check(token, (pem(p384),)).reason == "unknown_key"
    # A JWK that declares another alg is not used for this one.
    assert check(mint(KEYS["RS256"], "RS256"),
                 (jwk(KEYS["RS256"], alg="PS256"),)).reason == "unknown_key"


def test_the_algorithm_list_is_enforced() -> None:
    key = KEYS["RS256"]
    token = mint(key, "RS256")
    assert check(token, (pem(key),), algorithms=("ES256",)).reason == "algorithm_not_allowed"


def test_kid_selects_the_key() -> None:
    a, b = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    texts = (jwk(a, kid="a"), jwk(b, kid="b"))
    assert check(mint(b, "RS256", kid="b"), texts).claims is not None
    assert check(mint(b, "RS256", kid="c"), texts).reason == "unknown_key"
    assert check(mint(b, "RS256", kid="a"), texts).reason == "bad_signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000, "e30.e30.",
                                   b64(b"[1]") + ".e30.AA", "\xff.\xfe.\xfd"])
def test_garbage_is_malformed(token: str) -> None:
    assert check(token, (pem(KEYS["RS256"]),)).reason in ("malformed", "algorithm_not_allowed")


def test_a_payload_that_is_not_an_object_is_malformed() -> None:
    key = KEYS["HS256"]
    header = b64(json.dumps({"alg": "HS256"}).encode())
    payload = b64(b"[1, 2]")
    mac = hmac.new(key.raw_value, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert check(f"{header}.{payload}.{b64(mac)}", (jwk(key),)).reason == "malformed"


def test_reasons_never_carry_key_material() -> None:
    key = KEYS["HS256"]
    secret = json.loads(jwk(key))["k"]
    answers = [verify_effect(effect(t, (jwk(key),)), None, now=NOW) for t in (
        mint(key, "HS256", {"exp": NOW - 5}), mint(OctKey.generate_key(256), "HS256"), "x.y.z")]
    for answer in answers:
        assert answer.error in REASONS
        assert secret not in answer.error


def effect(token: str, keys=(), backend=None, path=None, **kw) -> VerifyJwt:
    base = {"algorithms": ALGORITHMS, "issuer": None, "audience": (), "leeway_s": 0.0}
    return VerifyJwt(token, tuple(keys), backend, path, **{**base, **kw})


def test_the_effect_answer_is_json_claims_or_a_reason() -> None:
    key = KEYS["EdDSA"]
    answer = verify_effect(effect(mint(key, "EdDSA", {"name": "Zoë"}), (pem(key),)), None,
                           now=NOW)
    assert answer.error is None
    assert json.loads(answer.claims_json)["name"] == "Zoë"
    assert answer.claims_json.isascii()  # one byte per char on the way into Lua


def test_a_bad_inline_key_names_its_position_not_its_text() -> None:
    with pytest.raises(InvalidKey) as caught:
        inline_keys((pem(KEYS["RS256"]), "-----BEGIN PUBLIC KEY-----\nnope\n"))
    assert caught.value.index == 2
    answer = verify_effect(effect("a.b.c", ("garbage",)), None)
    assert answer == JwtAnswer(error="invalid_key:1")


def test_inline_keys_are_parsed_once_per_distinct_set() -> None:
    texts = (pem(RSAKey.generate_key(2048)),)
    first = inline_keys(texts)
    assert inline_keys(tuple(texts)) is first


def test_a_jwks_that_cannot_be_had_is_keys_unavailable() -> None:
    key = KEYS["RS256"]
    answer = verify_effect(effect(mint(key, "RS256"), (), "idp", "/jwks"), None, now=NOW)
    assert answer.error == "keys_unavailable"
    # Inline keys still verify what they cover.
    answer = verify_effect(effect(mint(key, "RS256"), (pem(key),), "idp", "/jwks"), None,
                           now=NOW)
    assert answer.error is None


def test_max_age() -> None:
    assert max_age("public, max-age=120") == 120
    assert max_age("no-store") is None
    assert max_age(None) is None


# -- the JWKS cache, against a real backend ----------------------------------------------------


class JwksServer:
    """A loopback HTTP server answering GET /jwks with whatever `keys` holds now."""

    def __init__(self) -> None:
        self.keys: list = []
        self.hits = 0
        self.cache_control = "max-age=600"
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:  # (again after a test stopped it: nothing to do)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hits += 1
        body = json.dumps({"keys": [json.loads(jwk(k, kid=kid)) for kid, k in self.keys]})
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: "
                     f"{self.cache_control}\r\nContent-Length: {len(body)}\r\nConnection: "
                     f"close\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()

    def fetch(self):
        async def fetch():
            try:
                async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
                    response = await client.get(f"http://127.0.0.1:{self.port}/jwks")
            except httpx.HTTPError:
                return None
            return response.content, max_age(response.headers.get("cache-control"))
        return fetch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


WHERE = ("acme", "idp", "/jwks")


@pytest.fixture
async def idp():
    """A running JWKS server (no keys yet); stopped after the test."""
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


def rs256(key, kid: str = "k1", **claims) -> str:
    """An RS256 token for `key` under `kid`, valid for a minute."""
    return jwt.encode({"alg": "RS256", "kid": kid}, {"exp": time.time() + 60, **claims}, key)


async def verify_via(cache: JwksCache, server: JwksServer, token: str) -> JwtAnswer:
    kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")).get("kid")
    keys = await cache.keys(WHERE, server.fetch(), kid)
    return verify_effect(effect(token, (), "idp", "/jwks"), keys)


async def test_key_rotation_is_picked_up_by_one_refresh(idp) -> None:
    old, new = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    idp.keys = [("k1", old)]
    clock = Clock()
    cache = JwksCache(refresh_s=300, min_refresh_s=30, clock=clock)
    assert (await verify_via(cache, idp, rs256(old, "k1", sub="k1"))).error is None
    assert idp.hits == 1
    for _ in range(5):  # cached: no more fetches
        assert (await verify_via(cache, idp, rs256(old, "k1", sub="k1"))).error is None
    assert idp.hits == 1
    idp.keys = [("k1", old), ("k2", new)]  # the IdP rotates
    clock.now += 31
    answer = await verify_via(cache, idp, rs256(new, "k2", sub="k2"))
    assert answer.error is None and json.loads(answer.claims_json)["sub"] == "k2"
    assert idp.hits == 2  # exactly one refresh
    # An unknown kid asks again, but at most once per min_refresh_s.
    for _ in range(10):
        bad = await verify_via(cache, idp, rs256(RSAKey.generate_key(2048), "k9"))
        assert bad.error == "unknown_key"
    assert idp.hits == 2  # refreshed 0 s ago: none of those ten fetched
    clock.now += 31
    assert (await verify_via(cache, idp, rs256(new, "k9x"))).error == "unknown_key"
    assert idp.hits == 3


async def test_a_due_refresh_runs_in_the_background(idp) -> None:
    key = RSAKey.generate_key(2048)
    idp.keys = [("k1", key)]
    idp.cache_control = "max-age=60"  # shorter than refresh_s: it wins
    clock = Clock()
    cache = JwksCache(refresh_s=300, min_refresh_s=30, clock=clock)
    token = rs256(key)
    assert (await verify_via(cache, idp, token)).error is None
    clock.now += 61
    assert (await verify_via(cache, idp, token)).error is None  # answered from cache
    assert cache.fetches == 2  # ... and a refresh started, not awaited
    for _ in range(50):
        if idp.hits == 2:
            break
        await asyncio.sleep(0.02)
    assert idp.hits == 2


async def test_when_the_jwks_backend_is_down_cached_keys_keep_working(idp) -> None:
    key = RSAKey.generate_key(2048)
    idp.keys = [("k1", key)]
    clock = Clock()
    cache = JwksCache(refresh_s=60, min_refresh_s=30, clock=clock)
    token = rs256(key)
    assert (await verify_via(cache, idp, token)).error is None
    await idp.stop()  # the IdP goes down
    clock.now += 61  # a refresh is due, and fails
    for _ in range(3):
        assert (await verify_via(cache, idp, token)).error is None
        await asyncio.sleep(0.05)
    assert cache.fetches == 2 and cache.failures == 1
    # A fresh unknown kid: one more try once the interval has passed, then nothing.
    clock.now += 31
    fresh = rs256(RSAKey.generate_key(2048), "k2")
    for _ in range(5):
        assert (await verify_via(cache, idp, fresh)).error == "unknown_key"
    assert cache.fetches == 3 and cache.failures == 2
    assert (await verify_via(cache, idp, token)).error is None  # still fine


async def test_no_keys_ever_fetched_is_keys_unavailable_and_rate_limited(idp) -> None:
    await idp.stop()  # never up
    clock = Clock()
    cache = JwksCache(refresh_s=60, min_refresh_s=30, clock=clock)
    token = mint(KEYS["RS256"], "RS256", kid="k1")
    for _ in range(5):
        assert (await verify_via(cache, idp, token)).error == "keys_unavailable"
    assert cache.fetches == 1
    clock.now += 31
    assert (await verify_via(cache, idp, token)).error == "keys_unavailable"
    assert cache.fetches == 2


async def test_concurrent_first_requests_share_one_fetch(idp) -> None:
    key = RSAKey.generate_key(2048)
    idp.keys = [("k1", key)]
    cache = JwksCache(clock=Clock())
    token = rs256(key)
    answers = await asyncio.gather(*(verify_via(cache, idp, token) for _ in range(20)))
    assert all(a.error is None for a in answers)
    assert idp.hits == 1


def test_a_verified_token_is_reused_only_with_the_same_keys_and_rechecked_in_time() -> None:
    key = KEYS["RS256"]
    token = mint(key, "RS256", {"exp": NOW + 10})
    e = effect(token, (pem(key),))
    assert verify_effect(e, None, now=NOW).error is None
    assert verify_effect(e, None, now=NOW + 11).error == "expired"  # from the memo, in time
    # With a JWKS, the memo holds for the same key objects only: new keys verify again.
    jwks_effect = effect(token, (), "idp", "/jwks")
    first = (json.loads(jwk(key)),)
    from routing.jwt_verify import jwks_keys

    keys = jwks_keys({"keys": list(first)})
    assert verify_effect(jwks_effect, keys, now=NOW).error is None
    rotated = jwks_keys({"keys": [json.loads(jwk(RSAKey.generate_key(2048)))]})
    assert verify_effect(jwks_effect, rotated, now=NOW).error in ("bad_signature",
                                                                  "unknown_key")


async def test_a_jwks_answer_that_is_not_a_jwks_keeps_the_cached_keys(idp) -> None:
    key = RSAKey.generate_key(2048)
    idp.keys = [("k1", key)]
    clock = Clock()
    cache = JwksCache(refresh_s=60, min_refresh_s=30, clock=clock)
    token = rs256(key)
    assert (await verify_via(cache, idp, token)).error is None

    async def garbage():
        return b"<html>maintenance</html>", None

    clock.now += 61
    assert await cache.keys(WHERE, garbage, "k1") is not None  # due: background refresh
    await asyncio.sleep(0.05)
    assert cache.failures == 1
    assert (await verify_via(cache, idp, token)).error is None
