"""A Lua 5.4 tokenizer for display: syntax colour and word-level diffs in the admin.

Not a parser and never used to run anything: it splits a source into (kind, text) tokens
whose texts join back to the source exactly, then into lines (a long string or comment that
spans lines gives one piece per line, each keeping its kind).
"""

from __future__ import annotations

import re

KEYWORDS = frozenset("""and break do else elseif end false for function goto if in local nil not
or repeat return then true until while""".split())
# The script API (docs/scripting.md): coloured apart so a reader spots the routing calls.
API = frozenset("""chi chi_route chi_middleware proxy respond reject log json base64 crypto
time string table math utf8 tostring tonumber type pairs ipairs select error assert
pcall setmetatable getmetatable rawget rawequal rawlen""".split())

_TOKEN = re.compile(r"""
  (?P<comment>--\[(?P<ceq>=*)\[.*?(?:\](?P=ceq)\]|\Z)|--[^\n]*)
| (?P<string>\[(?P<seq>=*)\[.*?(?:\](?P=seq)\]|\Z)
    |"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?)
| (?P<number>0[xX][0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?(?:[pP][+-]?\d+)?
    |\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
| (?P<name>[A-Za-z_][A-Za-z_0-9]*)
| (?P<space>[ \t\r\f\v]+)
| (?P<newline>\n)
| (?P<op>\.\.\.|\.\.|==|~=|<=|>=|<<|>>|//|::|.)
""", re.VERBOSE | re.DOTALL)

Token = tuple[str, str]  # (kind, text); kinds: comment string number keyword api name space op


def tokens(source: str) -> list[Token]:
    out: list[Token] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        text = match.group(0)
        if kind in ("ceq", "seq"):  # a backreference group: the outer group is the kind
            kind = "comment" if text.startswith("--") else "string"
        if kind == "name":
            kind = "keyword" if text in KEYWORDS else "api" if text in API else "name"
        out.append((kind or "op", text))
    return out


def lines(source: str) -> list[list[Token]]:
    """The tokens of each line (no newline tokens), as str.splitlines() would cut them."""
    source = source.replace("\r\n", "\n")
    result: list[list[Token]] = [[]]
    for kind, text in tokens(source):
        if kind == "newline":
            result.append([])
            continue
        pieces = text.split("\n")
        for index, piece in enumerate(pieces):
            if index:
                result.append([])
            if piece:
                result[-1].append((kind, piece))
    if source.endswith("\n"):
        result.pop()
    return result
