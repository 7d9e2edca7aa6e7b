"""jwt.verify's host side: the verifier and the worker's JWKS cache.

A script's `jwt.verify(token, opts)` waits (effect `VerifyJwt`); the data plane answers it
here with `LiveEffects.verify_jwt`, the dry run with `StubEffects.verify_jwt`. All the
cryptography is joserfc's; this module only picks the keys and checks the claims.

- Keys written in the script (JWK JSON, a JWKS, or PEM) are parsed once per distinct tuple
  of key texts (`inline_keys`, an LRU cache): a script version's keys are parsed on its
  first request, not on every one.
- A JWKS comes from one of the tenant's own backends, by name (never a URL a script
  writes). `JwksCache` keeps one entry per (tenant, backend, path) in the worker. A due
  refresh (every `refresh_s`, or the JWKS's Cache-Control max-age when shorter) runs in the
  background while requests keep verifying with the keys they have; an unknown `kid` makes
  the request wait for one refresh, at most once per `min_refresh_s`; a failed fetch keeps
  the keys already cached. Only the very first fetch (nothing cached yet) is waited for.
- A token verified once is not verified again with the same key objects (`_VERIFIED`): its
  exp and nbf are checked again on each use.
- The answer is the claims as a JSON object, or a fixed reason word (`REASONS`): a reason
  never carries key material, a key's parse error or the token itself.

Algorithm confusion: the algorithm comes from the token's header, so every key is checked
against it by joserfc (`alg.check_key`: an HS256 token needs an "oct" key, RS256 an RSA
key, ES256 a P-256 key): an HS256 token "signed" with an RSA public key's PEM finds no
usable key. `none` is never accepted, whatever a script lists.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from joserfc.errors import (
    InvalidKeyCurveError,
    InvalidKeyTypeError,
    JoseError,
    UnsupportedKeyAlgorithmError,
    UnsupportedKeyUseError,
)
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry, extract_compact, validate_compact

from luascripts.engine.effects import JwtAnswer, VerifyJwt
from luascripts.engine.keys import jwks_keys, parse_key_text

__all__ = ["ALGORITHMS", "REASONS", "InvalidKey", "JwksCache", "inline_keys", "jwks_keys",
           "parse_jwks", "parse_key_text", "verify", "verify_effect"]

log = logging.getLogger("chistone.jwt")

# What scripts may list (identity.lua keeps the same list); "none" is not among them.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA", "Ed25519", "HS256", "HS384", "HS512")
REASONS = ("malformed", "algorithm_not_allowed", "unknown_key", "bad_signature", "expired",
           "not_yet_valid", "bad_issuer", "bad_audience", "keys_unavailable")
MAX_TOKEN_BYTES = 16 * 1024  # identity.lua refuses longer tokens before asking
# A key of the wrong type, curve, use or alg for the token's algorithm: not usable, which is
# not the same as a signature that does not verify.
_UNUSABLE = (InvalidKeyTypeError, InvalidKeyCurveError, UnsupportedKeyAlgorithmError,
             UnsupportedKeyUseError)


class InvalidKey(ValueError):
    """The script's `index`-th key (1-based) is not a usable JWK, JWKS or PEM key."""

    def __init__(self, index: int) -> None:
        super().__init__(f"keys[{index}] is not a JWK, a JWKS or a PEM key")
        self.index = index


@dataclass(frozen=True, slots=True)
class Verdict:
    claims: dict[str, Any] | None = None
    reason: str | None = None


# -- keys -----------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def inline_keys(texts: tuple[str, ...]) -> tuple[Key, ...]:
    """The parsed keys of a script's `keys` (cached by the texts: parsed once per script
    version, not per request). Raises InvalidKey naming the first bad one."""
    keys: list[Key] = []
    for index, text in enumerate(texts, start=1):
        try:
            keys.extend(parse_key_text(text))
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidKey(index) from None
    return tuple(keys)


def parse_jwks(body: bytes) -> tuple[Key, ...]:
    return jwks_keys(json.loads(body))


# -- verification ---------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _registry(alg: str) -> JWSRegistry:
    return JWSRegistry(algorithms=[alg])


def token_header(token: str) -> tuple[Any, dict[str, Any]] | str:
    """(the parsed compact JWS, its header), or the reason it is not one."""
    if len(token) > MAX_TOKEN_BYTES:
        return "malformed"
    try:
        obj = extract_compact(token.encode("latin-1"))
        header = obj.headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        return "malformed"
    if not isinstance(header.get("alg"), str):
        return "malformed"
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "malformed"
    return obj, header


def verify(token: str, keys: Sequence[Key], *, algorithms: Sequence[str],
           issuer: str | None = None, audience: Sequence[str] = (), leeway_s: float = 0.0,
           now: float | None = None) -> Verdict:
    """Check `token`'s signature with `keys`, then its exp, nbf, iss and aud."""
    parsed = token_header(token)
    if isinstance(parsed, str):
        return Verdict(reason=parsed)
    obj, header = parsed
    alg, kid = header["alg"], header.get("kid")
    if alg not in ALGORITHMS or alg not in algorithms:
        return Verdict(reason="algorithm_not_allowed")
    registry = _registry(alg)
    usable = False
    for key in keys:
        if kid is not None and key.kid is not None and key.kid != kid:
            continue
        if key.get("alg") not in (None, alg):
            continue
        try:
            if validate_compact(obj, key, (alg,), registry):
                break
            usable = True
        except _UNUSABLE:
            continue  # joserfc's key-type check: this key cannot serve this algorithm
        except JoseError:
            usable = True
    else:
        return Verdict(reason="bad_signature" if usable else "unknown_key")
    try:
        claims = json.loads(obj.payload)
    except (ValueError, TypeError):
        return Verdict(reason="malformed")
    if not isinstance(claims, dict):
        return Verdict(reason="malformed")
    reason = check_claims(claims, issuer=issuer, audience=audience, leeway_s=leeway_s,
                          now=time.time() if now is None else now)
    return Verdict(None, reason) if reason else Verdict(claims)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def check_claims(claims: dict[str, Any], *, issuer: str | None, audience: Sequence[str],
                 leeway_s: float, now: float) -> str | None:
    """The reason the registered claims refuse the token, or None (RFC 7519 section 4.1:
    exp and nbf are optional; iss and aud are required only when the script names them)."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None:
        if not _numeric(exp):
            return "malformed"
        if now >= exp + leeway_s:
            return "expired"
    if nbf is not None:
        if not _numeric(nbf):
            return "malformed"
        if now + leeway_s < nbf:
            return "not_yet_valid"
    if issuer is not None and claims.get("iss") != issuer:
        return "bad_issuer"
    if audience:
        aud = claims.get("aud")
        given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audience for a in given):
            return "bad_audience"
    return None


def claims_answer(verdict: Verdict) -> JwtAnswer:
    if verdict.claims is None:
        return JwtAnswer(error=verdict.reason)
    return JwtAnswer(json.dumps(verdict.claims, ensure_ascii=True, separators=(",", ":")))


# Tokens already verified: clients send the same token request after request, and its
# signature check is most of the cost (tens of microseconds for RS256). An entry is used only
# with the very same key objects it was verified with (a JWKS refresh or a new script version
# makes new ones, so nothing verified by a key that is gone is reused), and exp and nbf are
# checked again on every use. Successes only; the token is held as its digest.
_VERIFIED: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any], str]] = {}
_VERIFIED_MAX = 4096


def verify_effect(effect: VerifyJwt, jwks: Sequence[Key] | None, *,
                  now: float | None = None) -> JwtAnswer:
    """The answer to `effect` with the script's own keys plus `jwks` (None: the script
    asked for a JWKS and none could be had)."""
    try:
        inline = inline_keys(effect.keys) if effect.keys else ()
    except InvalidKey as exc:
        return JwtAnswer(error=f"invalid_key:{exc.index}")
    if now is None:
        now = time.time()
    memo = (hashlib.sha256(effect.token.encode("latin-1")).digest(), effect.algorithms,
            effect.issuer, effect.audience, effect.leeway_s, effect.jwks_backend,
            effect.jwks_path)
    seen = _VERIFIED.get(memo)
    if seen is not None and seen[0] is inline and seen[1] is jwks:
        reason = check_claims(seen[2], issuer=effect.issuer, audience=effect.audience,
                              leeway_s=effect.leeway_s, now=now)
        return JwtAnswer(error=reason) if reason else JwtAnswer(seen[3])
    keys: Sequence[Key] = inline
    if effect.jwks_backend is not None:
        if jwks is None and not inline:
            parsed = token_header(effect.token)
            return JwtAnswer(error=parsed if isinstance(parsed, str) else "keys_unavailable")
        keys = (*inline, *(jwks or ()))
    verdict = verify(effect.token, keys, algorithms=effect.algorithms, issuer=effect.issuer,
                     audience=effect.audience, leeway_s=effect.leeway_s, now=now)
    if verdict.reason == "unknown_key" and effect.jwks_backend is not None and jwks is None:
        verdict = Verdict(reason="keys_unavailable")
    answer = claims_answer(verdict)
    if verdict.claims is not None and answer.claims_json is not None:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[memo] = (inline, jwks, verdict.claims, answer.claims_json)
    return answer


# -- the JWKS cache -------------------------------------------------------------------------

# A fetch returns the JWKS body and its Cache-Control max-age (None: not given), or None
# when the backend could not give it.
Fetch = Callable[[], Awaitable[tuple[bytes, float | None] | None]]
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


class _Entry:
    __slots__ = ("attempted", "fetched", "inflight", "keys", "refresh_s")

    def __init__(self, refresh_s: float) -> None:
        self.keys: tuple[Key, ...] | None = None  # None: never fetched successfully
        self.fetched = -math.inf  # last successful fetch (clock)
        self.attempted = -math.inf  # last fetch started, successful or not
        self.refresh_s = refresh_s
        self.inflight: asyncio.Future[None] | None = None


class JwksCache:
    """The JWKS keys of every (tenant, backend, path) a worker's scripts verify with."""

    def __init__(self, *, refresh_s: float = 300.0, min_refresh_s: float = 30.0,
                 max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_s = refresh_s
        self.min_refresh_s = min(min_refresh_s, refresh_s)
        self.max_entries = max_entries
        self.clock = clock
        self.fetches = 0  # fetches started (tests and metrics)
        self.failures = 0
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._tasks: set[asyncio.Future[None]] = set()

    async def keys(self, where: tuple[str, str, str], fetch: Fetch,
                   kid: str | None = None) -> tuple[Key, ...] | None:
        """The keys to verify a token with (None: none could ever be fetched). Waits only
        when nothing is cached yet or `kid` is unknown (then at most one fetch per
        `min_refresh_s`); a refresh that is merely due runs in the background."""
        entry = self._entries.get(where)
        if entry is None:
            entry = self._entries[where] = _Entry(self.refresh_s)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(where)
        now = self.clock()
        if entry.keys is None or (kid is not None and
                                  not any(k.kid == kid for k in entry.keys)):
            await self._fetch_now(entry, fetch, now)
        elif now - entry.fetched >= entry.refresh_s and entry.inflight is None \
                and now - entry.attempted >= self.min_refresh_s:
            self._start(entry, fetch, now)  # in the background: this request goes on
        return entry.keys

    async def _fetch_now(self, entry: _Entry, fetch: Fetch, now: float) -> None:
        if entry.inflight is None:
            if now - entry.attempted < self.min_refresh_s:
                return  # fetched (or failed) too recently: answer with what is cached
            self._start(entry, fetch, now)
        assert entry.inflight is not None
        await asyncio.shield(entry.inflight)

    def _start(self, entry: _Entry, fetch: Fetch, now: float) -> None:
        entry.attempted = now
        self.fetches += 1
        task = asyncio.ensure_future(self._fetch(entry, fetch))
        entry.inflight = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, entry: _Entry, fetch: Fetch) -> None:
        try:
            got = await fetch()
            if got is None:
                raise ValueError("the backend did not answer with a JWKS")
            body, age = got
            keys = parse_jwks(body)
        except Exception as exc:  # any failure keeps the cached keys
            self.failures += 1
            # Logged once per attempt, and attempts are at most one per min_refresh_s.
            log.warning("JWKS fetch failed (%s); %s", type(exc).__name__,
                        "keeping the cached keys" if entry.keys else "no keys cached")
        else:
            entry.keys = keys
            entry.fetched = self.clock()
            entry.refresh_s = self.refresh_s if age is None else \
                min(self.refresh_s, max(age, self.min_refresh_s))
        finally:
            entry.inflight = None
