"""What can be known of a script from its text, beyond what registering it shows.

Registration checks the names a script passes to `mount()`, since mount runs while the
script loads. The backend names in `proxy(...)` and `http.request(...)` are only used when
a request runs, so a misspelt one (`proxy("mian")`) would load fine and answer 500 on every
request. Here the source is tokenised (Lua 5.4's lexical rules: comments, short and long
strings, escapes) and every call of `proxy` or `http.request` whose backend argument is a
literal -- a string, or a table of strings -- is checked against the tenant's backends, with
its line. Names built at run time (`proxy("users-" .. v)`) cannot be known here; they are
checked when the call runs.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from luascripts.engine.types import Diagnostic

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LONG_OPEN = re.compile(r"\[(=*)\[")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F.]*(?:[pP][+-]?\d+)?|\d[\d.]*(?:[eE][+-]?\d+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "\n": "\n"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "name", "string", "op", "number"
    text: str  # the name, the string's value, or the operator
    line: int


def tokens(source: str) -> Iterator[Token]:
    """Lua tokens with their lines; comments and whitespace skipped. A malformed source
    (which registration reports as a syntax error anyway) just ends the stream."""
    i, n, line = 0, len(source), 1
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif source.startswith("--", i):
            long = _LONG_OPEN.match(source, i + 2)
            if long:
                end = source.find("]" + long.group(1) + "]", long.end())
                end = n if end < 0 else end + len(long.group(1)) + 2
                line += source.count("\n", i, end)
                i = end
            else:
                end = source.find("\n", i)
                i = n if end < 0 else end
        elif c in "\"'":
            start_line = line
            value, i, line = _short_string(source, i, line)
            if value is None:
                return
            yield Token("string", value, start_line)
        elif c == "[" and _LONG_OPEN.match(source, i):
            long = _LONG_OPEN.match(source, i)
            assert long is not None
            close = "]" + long.group(1) + "]"
            end = source.find(close, long.end())
            if end < 0:
                return
            text = source[long.end():end]
            if text.startswith("\n"):
                text = text[1:]
            yield Token("string", text, line)
            line += source.count("\n", i, end)
            i = end + len(close)
        elif (match := _NAME.match(source, i)) is not None:  # ASCII only, as Lua's lexer
            yield Token("name", match.group(), line)
            i = match.end()
        elif (match := _NUMBER.match(source, i)) is not None:
            yield Token("number", match.group(), line)
            i = match.end()
        else:
            three = source[i:i + 3]
            if three == "...":
                op = three
            elif source[i:i + 2] in ("==", "~=", "<=", ">=", "//", "::", "<<", ">>", ".."):
                op = source[i:i + 2]
            else:
                op = c
            yield Token("op", op, line)
            i += len(op)


def _short_string(source: str, i: int, line: int) -> tuple[str | None, int, int]:
    quote = source[i]
    i += 1
    out: list[str] = []
    n = len(source)
    while i < n:
        c = source[i]
        if c == quote:
            return "".join(out), i + 1, line
        if c == "\n":
            return None, i, line  # unfinished string: a syntax error
        if c == "\\" and i + 1 < n:
            e = source[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                line += e == "\n"
                i += 2
            elif e == "z":
                i += 2
                while i < n and source[i] in " \t\r\n\f\v":
                    line += source[i] == "\n"
                    i += 1
            elif e.isdigit():
                digits = re.match(r"\d{1,3}", source[i + 1:])
                assert digits is not None
                out.append(chr(min(int(digits.group()), 255)))
                i += 1 + len(digits.group())
            elif e == "x" and re.match(r"[0-9a-fA-F]{2}", source[i + 2:i + 4]):
                out.append(chr(int(source[i + 2:i + 4], 16)))
                i += 4
            else:  # \u{...} and anything else: keep it opaque
                out.append("\\" + e)
                i += 2
        else:
            out.append(c)
            i += 1
    return None, i, line


def _literal_names(toks: list[Token], at: int) -> list[Token] | None:
    """The backend names of a call's first argument starting at toks[at] (after the
    function): "(" STRING, STRING (call without parentheses), or a table of strings.
    None when the argument is not a literal."""
    if at >= len(toks):
        return None
    tok = toks[at]
    if tok.kind == "string":
        return [tok]
    if tok.text == "{" and tok.kind == "op":
        return _table_of_strings(toks, at)
    if tok.text != "(" or tok.kind != "op" or at + 1 >= len(toks):
        return None
    first = toks[at + 1]
    if first.kind == "string":
        after = toks[at + 2] if at + 2 < len(toks) else None
        if after is not None and after.kind == "op" and after.text in (",", ")"):
            return [first]
        return None  # "a" .. b and the like: built at run time
    if first.kind == "op" and first.text == "{":
        return _table_of_strings(toks, at + 1)
    return None


def _table_of_strings(toks: list[Token], at: int) -> list[Token] | None:
    names: list[Token] = []
    i = at + 1
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "string":
            names.append(tok)
            i += 1
            sep = toks[i] if i < len(toks) else None
            if sep is None or sep.kind != "op" or sep.text not in (",", ";", "}"):
                return None
            if sep.text == "}":
                return names
            i += 1
        elif tok.kind == "op" and tok.text == "}":
            return names
        else:
            return None
    return None


def unknown_backends(source: str, backend_names: Collection[str]) -> list[Diagnostic]:
    """A diagnostic for every literal backend name in a `proxy(...)` or `http.request(...)`
    call that the tenant does not have."""
    known = set(backend_names)
    have = ", ".join(sorted(known)) or "no backends"
    toks = list(tokens(source))
    out: list[Diagnostic] = []
    for i, tok in enumerate(toks):
        if tok.kind != "name":
            continue
        previous = toks[i - 1] if i > 0 else None
        if previous is not None and previous.kind == "op" and previous.text in (".", ":"):
            continue  # a field named proxy, not the global
        call = None
        at = i + 1
        if tok.text == "proxy":
            call = "proxy"
        elif tok.text == "http" and i + 3 < len(toks) and toks[i + 1].text == "." \
                and toks[i + 2].text == "request":
            call, at = "http.request", i + 3
        if call is None:
            continue
        for name in _literal_names(toks, at) or ():
            if name.text not in known:
                out.append(Diagnostic(name.line, None,
                                      f"{call}(): unknown backend {name.text!r} (this tenant "
                                      f"has: {have})"))
    return out


# The globals whose use makes a script depend on shared state (state.lua).
_STATE_CALLS = {("shared", None), ("limit", "allow"), ("middleware", "rate_limit")}


def uses_shared_state(source: str) -> bool:
    """Whether the script names `shared.*`, `limit.allow` or `middleware.rate_limit` (as a
    global, not a field: `x.shared.get` does not count). A text scan: a local variable that
    shadows one of these names counts too, which errs on the side of a warning."""
    toks = list(tokens(source))
    for i, tok in enumerate(toks):
        if tok.kind != "name" or tok.text not in ("shared", "limit", "middleware"):
            continue
        if i > 0 and toks[i - 1].kind == "op" and toks[i - 1].text in (".", ":"):
            continue
        if i + 1 >= len(toks) or toks[i + 1].text not in (".", "["):
            continue
        field = toks[i + 2].text if i + 2 < len(toks) else None
        if (tok.text, None) in _STATE_CALLS or (tok.text, field) in _STATE_CALLS:
            return True
    return False
