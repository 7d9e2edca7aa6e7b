"""chi's routing tree in pure Python: built once per loaded script, matched per request.

A port of go-chi v5's tree.go: a radix tree over the raw path whose nodes keep their
children in four groups tried in this order: static (a dict keyed by the next character,
where chi binary-searches the same unique labels), `{name:regexp}`, `{name}`, then the `*`
catch-all, backtracking when a branch dead-ends. Within a group, params sit in chi's order
(insertion order, with the last '/'-tailed one moved to the end on every insertion). A leaf
maps methods to whatever the caller stored there (`Leaf.target`).

`find` follows chi's findRoute step for step, including its edge cases: a plain param
matches an empty value in the middle of a path (`/users///c` against `/users/{x}/{y}/{z}`),
never at the end; a regexp param whose value would be empty is skipped, but once every
regexp param at a node failed, chi descends into the last of them with an empty value and
without testing its regexp (`//test` matches `/{param:[0-9]*}/test`).

When the path exists but not for the request's method, `find` reports the methods it saw so
the caller can answer 405 with an `Allow` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from luascripts.engine.patterns import Param, Static, Token, param_names, regexp_key

METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY",
           "TRACE")
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
    __slots__ = ("prefix", "static", "regexps", "params", "catchall", "endpoints", "any",
                 "tail", "regexp", "key")

    def __init__(self, prefix: str = "", tail: str = "/", regexp: Any = None,
                 key: str | None = None) -> None:
        self.prefix = prefix  # static text consumed by this node ("" for params)
        self.static: dict[str, Node] | None = {}  # by first character; None once sealed empty
        self.regexps: list[Node] | tuple[Node, ...] = []  # chi's order; a tuple once sealed
        self.params: list[Node] | tuple[Node, ...] = []
        self.catchall: Node | None = None
        self.endpoints: dict[str, Leaf] | None = {}
        self.any: Leaf | None = None  # registered for "*": also serves unknown methods
        self.tail = tail
        self.regexp = regexp
        self.key = key  # the anchored regexp chi compares siblings by (None for `{name}`)


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
        """Freeze the child lists and check the depth `_search` will recurse to."""
        stack = [(self.root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise TreeTooDeep(f"the routes nest more than {MAX_DEPTH} levels deep "
                                  "(too many patterns that extend one another)")
            stack.extend((child, depth + 1) for child in _seal(node))

    def find(self, method: str, path: str) -> tuple[Leaf | None, list[str], set[str]]:
        """(leaf, param values, allowed methods); leaf is None for 404 or 405."""
        # chi tries static children first at every node, so an all-static pattern equal to
        # the path is always the first leaf its search reaches.
        node = self.static_paths.get(path)
        if node is not None and node.endpoints is not None:
            leaf = node.endpoints.get(method)
            if leaf is not None:
                return leaf, [], set()
        values: list[str] = []
        allowed: set[str] = set()
        leaf = _search(self.root, method, path, 0, len(path), values, allowed)
        return leaf, values, allowed

    def find_pattern(self, pattern: str) -> bool:
        """chi's findPattern, which Mount() asks about `prefix + "*"` and `prefix + "/*"`
        before mounting: does the tree already hold this pattern, params compared by
        position only? Ported as is, shortcuts included: it follows the first group whose
        edge fits and never backtracks, and among several param (or regexp) children it
        looks at the middle one only (where chi's binary search over equal labels lands)."""
        return _find_pattern(self.root, pattern)


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
    key = regexp_key(token)
    siblings = node.params if key is None else node.regexps
    for child in siblings:
        if child.tail == token.tail and child.key == key:
            return child
    child = Node("", token.tail, token.regexp, key)
    siblings.append(child)
    _tail_sort(siblings)  # type: ignore[arg-type]
    return child


def _tail_sort(nodes: list[Node]) -> None:
    """chi's nodes.tailSort, run after every insertion: the last '/'-tailed param moves to
    the end (chi's sort by label first is a no-op here: every param's label is '{')."""
    for i in range(len(nodes) - 1, -1, -1):
        if nodes[i].tail == "/":
            nodes[i], nodes[-1] = nodes[-1], nodes[i]
            return


def _common_prefix(a: str, b: str) -> int:
    i, n = 0, min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _seal(node: Node) -> list[Node]:
    """Freeze one node; returns its children."""
    node.regexps = tuple(node.regexps)
    node.params = tuple(node.params)
    children = [*(node.static or {}).values(), *node.regexps, *node.params]
    if node.catchall is not None:
        children.append(node.catchall)
    if not node.static:
        node.static = None
    if not node.endpoints:
        node.endpoints = None
    return children


def _leaf(node: Node, method: str, allowed: set[str]) -> Leaf | None:
    """The leaf check chi makes when a child consumed the rest of the path."""
    endpoints = node.endpoints
    if endpoints is None:
        return None
    leaf = endpoints.get(method)
    if leaf is None and node.any is not None and method not in _KNOWN:
        leaf = node.any
    if leaf is None:
        allowed.update(endpoints)  # the path exists: 405 unless something else matches
    return leaf


def _search(node: Node, method: str, path: str, i: int, n: int, values: list[str],
            allowed: set[str]) -> Leaf | None:
    """chi's findRoute below `node`, whose own text ends at path[i]. The leaf check of a
    child happens here, before descending into it, as in chi."""
    if i < n:
        static = node.static
        if static is not None:
            child = static.get(path[i])
            if child is not None and path.startswith(child.prefix, i):
                end = i + len(child.prefix)
                if end == n and child.endpoints is not None:
                    leaf = _leaf(child, method, allowed)
                    if leaf is not None:
                        return leaf
                leaf = _search(child, method, path, end, n, values, allowed)
                if leaf is not None:
                    return leaf
        regexps = node.regexps
        if regexps:
            for child in regexps:
                end = path.find(child.tail, i)
                if end < 0:
                    if child.tail != "/":
                        continue
                    end = n
                elif end == i:
                    continue  # a regexp param is never tested against an empty value
                value = path[i:end]
                if not child.regexp.matches(value):
                    continue
                values.append(value)
                if end == n and child.endpoints is not None:
                    leaf = _leaf(child, method, allowed)
                    if leaf is not None:
                        return leaf
                leaf = _search(child, method, path, end, n, values, allowed)
                if leaf is not None:
                    return leaf
                values.pop()
            # chi leaves its loop variable on the last regexp child and descends into it with
            # an empty value, its regexp untested. A param's children all start with its tail,
            # so that can only lead somewhere when the path continues with that tail.
            child = regexps[-1]
            if path.startswith(child.tail, i):
                values.append("")
                leaf = _search(child, method, path, i, n, values, allowed)
                if leaf is not None:
                    return leaf
                values.pop()
        params = node.params
        if params:
            for child in params:
                tail = child.tail
                end = path.find(tail, i)
                if end < 0:
                    if tail != "/":
                        continue
                    end = n
                elif tail != "/" and path.find("/", i, end) >= 0:
                    continue  # a plain param never spans path segments
                values.append(path[i:end])  # empty when the tail comes right away
                if end == n and child.endpoints is not None:
                    # _leaf() inlined: this is where most requests end
                    leaf = child.endpoints.get(method)
                    if leaf is not None:
                        return leaf
                    leaf = _leaf(child, method, allowed)
                    if leaf is not None:
                        return leaf
                leaf = _search(child, method, path, end, n, values, allowed)
                if leaf is not None:
                    return leaf
                values.pop()
            # chi then descends into the last plain param with an empty value, as for
            # regexps. Here that repeats a search the loop above already made (an empty
            # value is tried there whenever the path continues with the tail, the only case
            # that can lead anywhere), so it is skipped: same result, no exponential blow-up
            # on paths like "//////".
    catchall = node.catchall
    if catchall is not None:
        values.append(path[i:])
        leaf = _leaf(catchall, method, allowed)  # nothing can follow a '*': no descent
        if leaf is not None:
            return leaf
        values.pop()
    return None


def _find_pattern(node: Node, pattern: str) -> bool:
    groups = (node.static, node.regexps, node.params, node.catchall)
    for kind, group in enumerate(groups):
        if not group:
            continue
        if kind == 0:
            child = group.get(pattern[0])  # type: ignore[union-attr]
            if child is None:
                continue
            used = _common_prefix(pattern, child.prefix)
            if used < len(child.prefix):
                continue
        elif kind in (1, 2):
            if pattern[0] != "{":
                continue
            child = group[(len(group) - 1) // 2]  # type: ignore[index]
            used = pattern.find("}") + 1
        else:
            child = group  # type: ignore[assignment]
            used = 1 if pattern.startswith("*") else 0
        rest = pattern[used:]
        if not rest:
            return True
        return _find_pattern(child, rest)
    return False


_KNOWN = frozenset(METHODS)
