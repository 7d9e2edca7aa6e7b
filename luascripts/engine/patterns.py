"""go-chi v5 route patterns: parsing and the registration errors chi raises for them.

A pattern is static text with `{name}` params, `{name:regexp}` params and an optional
trailing `*` catch-all. A param's value runs up to the next occurrence of its *tail*, the
character that follows it in the pattern ("/" when the param ends the pattern), exactly as
chi's tree does. Patterns are case-sensitive and never normalised (no trailing-slash magic).

`route_pattern` is chi's `Context.RoutePattern()`: what a request reports as its pattern once
the patterns matched in each (mounted) router are joined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from luascripts.engine.regexps import ParamRegexp, RegexpError, compile_param_regexp

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_PATTERN_BYTES = 2048


class PatternError(ValueError):
    """A pattern chi would refuse; the message is meant for the script's author."""


@dataclass(frozen=True, slots=True)
class Static:
    text: str


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    tail: str  # the byte that ends the value ("/" by default)
    regexp: ParamRegexp | None = None  # None for a plain `{name}`


@dataclass(frozen=True, slots=True)
class CatchAll:
    name: str = "*"


Token = Static | Param | CatchAll


def parse_pattern(pattern: str) -> tuple[Token, ...]:
    """Split `pattern` into tokens, or raise PatternError with chi's reasons."""
    if not pattern.startswith("/"):
        raise PatternError(f"routing pattern must begin with '/' (got {pattern!r})")
    if len(pattern) > MAX_PATTERN_BYTES:
        raise PatternError(f"routing pattern is longer than {MAX_PATTERN_BYTES} characters")
    tokens: list[Token] = []
    names: set[str] = set()
    text: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i != n - 1:
                raise PatternError(
                    f"in {pattern!r}: the wildcard '*' must be the last character of a route; "
                    "use a '{param}' for a segment in the middle")
            _flush(tokens, text)
            if tokens and isinstance(tokens[-1], Param):
                raise PatternError(f"in {pattern!r}: a param cannot be directly followed by '*'")
            tokens.append(CatchAll())
            i += 1
        elif c == "{":
            end = _closing_brace(pattern, i)
            _flush(tokens, text)
            if tokens and isinstance(tokens[-1], Param):
                raise PatternError(
                    f"in {pattern!r}: two params must be separated by static text")
            tail = pattern[end + 1] if end + 1 < n else "/"
            tokens.append(_param(pattern, pattern[i + 1:end], tail, names))
            i = end + 1
        elif c == "}":
            raise PatternError(f"in {pattern!r}: '}}' at offset {i} has no opening '{{'")
        else:
            text.append(c)
            i += 1
    _flush(tokens, text)
    return tuple(tokens)


def param_names(tokens: tuple[Token, ...]) -> tuple[str, ...]:
    return tuple(t.name for t in tokens if isinstance(t, Param | CatchAll))


def regexp_key(param: Param) -> str | None:
    """The regexp as chi's tree compares it: '^' and '$' added where missing, so
    `{a:[0-9]+}` and `{b:^[0-9]+$}` share one tree node, as in chi. None for a plain param."""
    if param.regexp is None:
        return None
    source = param.regexp.source
    return ("" if source.startswith("^") else "^") + source + ("" if source.endswith("$") else "$")


def route_pattern(joined: str) -> str:
    """chi's RoutePattern(): `joined` is the concatenation of the patterns matched at each
    level of mounted routers ("/api/*" + "/users/{id}"). Every "/*/" collapses to "/"
    (repeatedly), then one trailing "//" and one trailing "/" go, except for the root "/"."""
    while "/*/" in joined:
        joined = joined.replace("/*/", "/")
    if joined != "/":
        joined = joined.removesuffix("//").removesuffix("/")
    return joined


def _flush(tokens: list[Token], text: list[str]) -> None:
    if text:
        tokens.append(Static("".join(text)))
        text.clear()


def _closing_brace(pattern: str, start: int) -> int:
    """Index of the '}' closing the '{' at `start`, counting nested braces as chi does."""
    depth = 0
    for i in range(start, len(pattern)):
        if pattern[i] == "{":
            depth += 1
        elif pattern[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise PatternError(f"in {pattern!r}: route param closing delimiter '}}' is missing")


def _param(pattern: str, body: str, tail: str, names: set[str]) -> Param:
    name, colon, source = body.partition(":")
    if not _NAME_RE.fullmatch(name):
        raise PatternError(
            f"in {pattern!r}: param name {name!r} must be letters, digits, '_' or '-' "
            "and start with a letter or '_'")
    if name in names:
        raise PatternError(f"routing pattern {pattern!r} contains duplicate param key {name!r}")
    names.add(name)
    if not colon:
        return Param(name, tail)
    try:
        regexp = compile_param_regexp(source)
    except RegexpError as exc:
        raise PatternError(f"in {pattern!r}: invalid regexp for param {name!r}: {exc}") from None
    return Param(name, tail, regexp)
