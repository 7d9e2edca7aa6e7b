"""Group 3 (fuzzing): the route-pattern parser and matcher against a reference.

The reference below is deliberately naive: it splits the path on "/" and compares segment by
segment, for the supported subset (static segments, `{name}`, `{name:regexp}` with simple
regexps, an optional trailing slash, a trailing `*`). When several routes match, chi's order
says a segment is tried as static text, then regexp params, then plain params, then the
catch-all, backtracking on dead ends: the winner is the matching route whose sequence of
segment kinds is smallest, compared segment by segment. As in chi, a plain param matches an
empty segment unless it is the path's last one. The real matcher (a radix tree over raw
characters, luascripts/engine/tree.py) must agree with it, in Python and through Lua.

One chi rule is left out of the reference, because it depends on the whole tree: once every
regexp param at a node failed, chi descends into the last of them with an empty value and
no regexp test. Paths that put an empty segment where a route has a regexp param are not
judged here; tests/luascripts/engine/test_chi_tree.py pins that rule with chi's own vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from luascripts.engine.patterns import (
    CatchAll,
    Param,
    PatternError,
    Static,
    parse_pattern,
    route_pattern,
)
from luascripts.engine.tree import Tree

from .support import load, request

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

STATIC, REGEXP, PARAM, CATCHALL = 0, 1, 2, 3
SIMPLE_REGEXPS = ["[0-9]+", "[a-z]+", "[a-z0-9-]+", "v[12]", "[0-9]{2,4}", "(foo|bar)",
                  "[a-f0-9]{4}"]
SEGMENT_CHARS = "abcfov0129-._~%"  # path characters, '%' kept raw (never decoded)
UNJUDGED = "unjudged"  # reference_match: an empty segment where the route has a regexp param


@dataclass(frozen=True)
class Seg:
    kind: int
    text: str = ""  # static text, or the param name
    regexp: str = ""

    @property
    def source(self) -> str:
        if self.kind == STATIC:
            return self.text
        if self.kind == REGEXP:
            return "{" + self.text + ":" + self.regexp + "}"
        return "{" + self.text + "}"


@dataclass(frozen=True)
class Route:
    segs: tuple[Seg, ...]
    trailing_slash: bool
    catchall: bool

    @property
    def pattern(self) -> str:
        base = "/" + "/".join(s.source for s in self.segs)
        if self.catchall:
            return base + ("/*" if self.segs else "*")
        if self.trailing_slash and self.segs:
            return base + "/"
        return base

    def kinds(self) -> tuple[int, ...]:
        kinds = tuple(s.kind for s in self.segs)
        if self.catchall:
            return (*kinds, CATCHALL)
        if self.trailing_slash or not self.segs:
            return (*kinds, STATIC)  # the final empty segment (or the root "/")
        return kinds


def reference_match(route: Route, path: str) -> dict[str, str] | str | None:
    """The params if `route` matches `path`, else None: the naive segment-wise definition
    (UNJUDGED where chi's empty-regexp rule, left out of the reference, could apply)."""
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    segs = list(route.segs)
    if route.catchall:
        if len(parts) < len(segs) + 1:
            return None
        head, rest = parts[:len(segs)], "/".join(parts[len(segs):])
    else:
        expected = len(segs) + (1 if route.trailing_slash or not segs else 0)
        if len(parts) != expected:
            return None
        head, rest = parts[:len(segs)], None
        if len(parts) > len(segs) and parts[-1] != "":
            return None
    params: dict[str, str] = {}
    for index, (seg, value) in enumerate(zip(segs, head, strict=True)):
        if seg.kind == STATIC:
            if value != seg.text:
                return None
            continue
        if not value:
            if index == len(parts) - 1:
                return None  # a param never matches an empty value at the end of the path
            if seg.kind == REGEXP:
                return UNJUDGED
        if seg.kind == REGEXP and re.fullmatch(seg.regexp, value) is None:
            return None
        params[seg.text] = value
    if rest is not None:
        params["*"] = rest
    return params


def _beats(a: Route, b: Route) -> bool:
    """True if chi's tree prefers route `a` to route `b` for a path both match.

    Compared segment by segment: a lower kind wins at the first position where the kinds
    differ. Where both have a regexp param with different regexps, the routes sit in sibling
    subtrees of the tree and chi takes whichever sibling it tries first (an order it does not
    promise), so neither beats the other from there on.
    """
    for sa, sb in zip(a.segs, b.segs, strict=False):
        if sa.kind != sb.kind:
            return sa.kind < sb.kind
        if sa.kind == REGEXP and sa.regexp != sb.regexp:
            return False
    ka, kb = a.kinds(), b.kinds()
    return ka < kb


def reference_winners(routes: list[Route], path: str) -> dict[int, dict[str, str]] | None:
    """Every matching route that no other matching route beats, with its params (None when
    the reference cannot judge the path)."""
    matching = {i: p for i, r in enumerate(routes) if (p := reference_match(r, path)) is not None}
    if UNJUDGED in matching.values():
        event("unjudged: empty segment at a regexp param")
        return None
    return {i: p for i, p in matching.items()
            if not any(_beats(routes[j], routes[i]) for j in matching if j != i)}


# -- strategies -------------------------------------------------------------------------------

static_text = st.text(alphabet="abcfov0129-._~", min_size=1, max_size=4).filter(
    lambda t: t not in (".", ".."))


@st.composite
def routes(draw) -> Route:
    count = draw(st.integers(0, 4))
    names = iter(draw(st.lists(st.sampled_from("abcdefgh"), min_size=4, max_size=4,
                               unique=True)))
    segs = []
    for _ in range(count):
        kind = draw(st.sampled_from([STATIC, STATIC, REGEXP, PARAM]))
        if kind == STATIC:
            segs.append(Seg(STATIC, draw(static_text)))
        elif kind == REGEXP:
            segs.append(Seg(REGEXP, next(names), draw(st.sampled_from(SIMPLE_REGEXPS))))
        else:
            segs.append(Seg(PARAM, next(names)))
    catchall = draw(st.booleans()) and draw(st.booleans())
    return Route(tuple(segs), draw(st.booleans()) and not catchall, catchall)


@st.composite
def path_for(draw, route: Route) -> str:
    parts = []
    for seg in route.segs:
        if seg.kind == STATIC:
            parts.append(seg.text if draw(st.integers(0, 5)) else draw(static_text))
        elif seg.kind == REGEXP:
            parts.append(draw(st.from_regex(seg.regexp, fullmatch=True)))
        else:
            parts.append(draw(st.text(alphabet=SEGMENT_CHARS, min_size=0, max_size=5)))
    path = "/" + "/".join(parts)
    if route.catchall:
        path += "/" + "/".join(draw(st.lists(st.text(alphabet=SEGMENT_CHARS, max_size=3),
                                             max_size=3)))
    elif route.trailing_slash:
        path += "/"
    if not draw(st.integers(0, 4)):  # now and then, a near miss
        path = draw(st.sampled_from([path + "/", path[:-1] or "/", path + "x", "//" + path]))
    return path


def build_tree(table: list[Route]) -> Tree:
    tree = Tree()
    for index, route in enumerate(table):
        tree.insert("GET", parse_pattern(route.pattern), index)
    tree.seal()
    return tree


def dedupe(table: list[Route]) -> list[Route]:
    seen: dict[str, Route] = {}
    for route in table:
        seen[route.pattern] = route  # registering a pattern twice keeps the last (chi)
    return list(seen.values())


# -- the properties ---------------------------------------------------------------------------

@FUZZ
@given(st.data())
def test_the_tree_matches_like_the_reference(data):
    table = dedupe(data.draw(st.lists(routes(), min_size=1, max_size=6)))
    tree = build_tree(table)
    for _ in range(4):
        path = data.draw(path_for(data.draw(st.sampled_from(table))))
        winners = reference_winners(table, path)
        if winners is None:
            continue
        event(f"{len(winners)} winner(s)")
        leaf, values, allowed = tree.find("GET", path)
        if not winners:
            assert leaf is None, (path, [r.pattern for r in table], leaf)
            continue
        assert leaf is not None, (path, [r.pattern for r in table], winners)
        assert leaf.target in winners, (path, table[leaf.target].pattern,
                                        [table[i].pattern for i in winners])
        assert dict(zip(leaf.keys, values, strict=True)) == winners[leaf.target]
        assert allowed == set()


@FUZZ
@given(routes())
def test_parsing_a_valid_pattern_gives_back_its_parts(route):
    tokens = parse_pattern(route.pattern)
    rebuilt = "".join(
        t.text if isinstance(t, Static) else "*" if isinstance(t, CatchAll) else
        "{" + t.name + (":" + t.regexp.source if t.regexp else "") + "}" for t in tokens)
    assert rebuilt == route.pattern
    names = [t.name for t in tokens if isinstance(t, Param)]
    assert names == [s.text for s in route.segs if s.kind != STATIC]
    assert all(t.tail == "/" for t in tokens if isinstance(t, Param))


@FUZZ
@given(st.text(alphabet="/{}*:ab0[]()+?|\\.$^-", max_size=40))
def test_the_parser_only_ever_refuses_with_a_pattern_error(text):
    try:
        tokens = parse_pattern(text)
    except PatternError as exc:
        assert str(exc)
        return
    assert text.startswith("/")
    assert sum(isinstance(t, CatchAll) for t in tokens) <= 1
    assert not tokens or not any(isinstance(t, CatchAll) for t in tokens[:-1])
    names = [t.name for t in tokens if isinstance(t, Param)]
    assert len(names) == len(set(names))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_loaded_script_routes_like_the_reference(data):
    """The same, end to end: the routes registered by a real Lua script."""
    table = dedupe(data.draw(st.lists(routes(), min_size=1, max_size=5)))
    source = "\n".join(
        f"chi.get({route.pattern!r}, function(req) return respond(200, {str(i)!r}) end)"
        for i, route in enumerate(table))
    script = load(source)
    try:
        for _ in range(3):
            path = data.draw(path_for(data.draw(st.sampled_from(table))))
            winners = reference_winners(table, path)
            if winners is None:
                continue
            outcome = script.handle(request(path))
            if not winners:
                assert outcome.action.status == 404 and outcome.route_pattern is None
                continue
            index = int(outcome.action.body)
            assert index in winners, (path, table[index].pattern)
            assert outcome.route_pattern == route_pattern(table[index].pattern)
            assert dict(outcome.params) == winners[index]
    finally:
        script.close()
