"""chi's routing tree in pure Python: built once per loaded script, matched per request.

A radix tree over the raw path. Each node keeps its children by kind and tries them in chi's
order, backtracking when a branch dead-ends: static (a dict keyed by the next character, so
no regexp and no scan where a lookup works), then `{name:regexp}`, then `{name}`, then the
`*` catch-all. A leaf maps methods to whatever the caller stored there (`Leaf.target`).

When the path exists but not for the request's method, `find` reports the methods it saw so
the caller can answer 405 with an `Allow` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from luascripts.engine.patterns import Param, Static, Token, param_names

METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
ANY = "*"
MAX_DEPTH = 256  # `_search` recurses once per level; Python's own limit is 1000 frames


class TreeTooDeep(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Leaf:
    """What a pattern leads to for one method, with the names of its params in order."""

    target: Any
    keys: tuple[str, ...]


class Node:
    __slots__ = ("prefix", "static", "dynamic", "regexps", "params", "catchall", "endpoints",
                 "any", "tail", "regexp")

    def __init__(self, prefix: str = "", tail: str = "/", regexp: Any = None) -> None:
        self.prefix = prefix  # static text consumed by this node ("" for params)
        self.static: dict[str, Node] | None = {}  # by first character; None once sealed empty
        self.regexps: list[Node] = []
        self.params: list[Node] = []
        self.dynamic: tuple[Node, ...] = ()  # sealed: regexps then params, in trial order
        self.catchall: Node | None = None
        self.endpoints: dict[str, Leaf] | None = {}
        self.any: Leaf | None = None  # registered for "*": also serves unknown methods
        self.tail = tail
        self.regexp = regexp


class Tree:
    """One router's patterns. Insert everything first, then call `find` as often as needed."""

    def __init__(self) -> None:
        self.root = Node()
        self.static_paths: dict[str, Node] = {}  # all-static patterns: one dict hit

    def insert(self, method: str, tokens: tuple[Token, ...], target: Any) -> None:
        node = self.root
        for token in tokens:
            if isinstance(token, Static):
                node = _insert_static(node, token.text)
            elif isinstance(token, Param):
                node = _insert_param(node, token)
            else:
                if node.catchall is None:
                    node.catchall = Node()
                node = node.catchall
        leaf = Leaf(target, param_names(tokens))
        if method == ANY:
            node.any = leaf
            for m in METHODS:
                node.endpoints[m] = leaf
        else:
            node.endpoints[method] = leaf
        if all(isinstance(t, Static) for t in tokens):
            self.static_paths["".join(t.text for t in tokens)] = node  # type: ignore[union-attr]

    def seal(self) -> None:
        """Freeze child order and check the depth `_search` will recurse to."""
        stack = [(self.root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise TreeTooDeep(f"the routes nest more than {MAX_DEPTH} levels deep "
                                  "(too many patterns that extend one another)")
            stack.extend((child, depth + 1) for child in _seal(node))

    def find(self, method: str, path: str) -> tuple[Leaf | None, list[str], set[str]]:
        """(leaf, param values, allowed methods); leaf is None for 404 or 405."""
        node = self.static_paths.get(path)
        if node is not None and node.endpoints is not None:
            leaf = node.endpoints.get(method)
            if leaf is not None:
                return leaf, [], set()
        values: list[str] = []
        allowed: set[str] = set()
        leaf = _search(self.root, method, path, 0, len(path), values, allowed)
        return leaf, values, allowed


def _insert_static(node: Node, text: str) -> Node:
    while text:
        child = node.static.get(text[0])
        if child is None:
            child = Node(text)
            node.static[text[0]] = child
            return child
        common = _common_prefix(text, child.prefix)
        if common < len(child.prefix):
            # Split `child` so that the shared part becomes its own node.
            middle = Node(child.prefix[:common])
            child.prefix = child.prefix[common:]
            middle.static[child.prefix[0]] = child
            node.static[text[0]] = middle
            child = middle
        node = child
        text = text[common:]
    return node


def _insert_param(node: Node, token: Param) -> Node:
    siblings = node.params if token.regexp is None else node.regexps
    for child in siblings:
        same_regexp = token.regexp is None or child.regexp.source == token.regexp.source
        if child.tail == token.tail and same_regexp:
            return child
    child = Node("", token.tail, token.regexp)
    siblings.append(child)
    return child


def _common_prefix(a: str, b: str) -> int:
    i, n = 0, min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _seal(node: Node) -> list[Node]:
    """Freeze one node; returns its children."""
    # chi tries params whose tail is a specific character before '/'-tailed ones.
    node.regexps.sort(key=lambda child: child.tail == "/")
    node.params.sort(key=lambda child: child.tail == "/")
    node.dynamic = (*node.regexps, *node.params)
    children = [*(node.static or {}).values(), *node.dynamic]
    if node.catchall is not None:
        children.append(node.catchall)
    if not node.static:
        node.static = None
    if not node.endpoints:
        node.endpoints = None
    return children


def _search(node: Node, method: str, path: str, i: int, n: int, values: list[str],
            allowed: set[str]) -> Leaf | None:
    """Match path[i:] below `node` (whose own text ends at i), depth first in chi's order."""
    if i == n:
        endpoints = node.endpoints
        if endpoints is not None:
            leaf = endpoints.get(method)
            if leaf is None and node.any is not None and method not in _KNOWN:
                leaf = node.any
            if leaf is not None:
                return leaf
            allowed.update(endpoints)
        # nothing but a catch-all matches an empty rest (params never match empty values)
        if node.catchall is not None:
            values.append("")
            leaf = _search(node.catchall, method, path, n, n, values, allowed)
            if leaf is not None:
                return leaf
            values.pop()
        return None
    static = node.static
    if static is not None:
        child = static.get(path[i])
        if child is not None and path.startswith(child.prefix, i):
            leaf = _search(child, method, path, i + len(child.prefix), n, values, allowed)
            if leaf is not None:
                return leaf
    for child in node.dynamic:
        tail = child.tail
        end = path.find(tail, i)
        if end < 0:
            if tail != "/":
                continue
            end = n
        elif end == i:
            continue  # params never match an empty value
        value = path[i:end]
        if child.regexp is not None:
            if not child.regexp.matches(value):
                continue
        elif tail != "/" and "/" in value:
            continue  # a plain param never spans path segments
        values.append(value)
        leaf = _search(child, method, path, end, n, values, allowed)
        if leaf is not None:
            return leaf
        values.pop()
    if node.catchall is not None:
        values.append(path[i:])
        leaf = _search(node.catchall, method, path, n, n, values, allowed)
        if leaf is not None:
            return leaf
        values.pop()
    return None


_KNOWN = frozenset(METHODS)
