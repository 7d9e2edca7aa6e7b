"""Per-request routing: walk the compiled views (through mounts) to a target or a fallback.

Pure functions over immutable data, no Lua: the result tells the script runner which chain
to call with which params, or lets it answer a 404/405 or an unguarded backend mount
without entering Lua at all.

This is chi's Mux.routeHTTP repeated down the mounted routers, with the routing context
chi carries along: params found so far, the methods a path was seen with (chi never clears
them between routers, so a 404 inside a mounted router becomes a 405 when an outer router
already saw the path with other methods), and the mount patterns the route pattern is
joined from.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from luascripts.engine.patterns import route_pattern
from luascripts.engine.routes import BACKEND, SUBROUTER, Fallback, Target, View

NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class Match(NamedTuple):  # a tuple: built once per request, so it has to be cheap
    target: Target | None  # None: nothing matched, see `fallback`
    params: Mapping[str, str]
    fallback: Fallback | None = None
    allow: tuple[str, ...] = ()  # non-empty: 405 (the path exists for these methods)
    rest: str = "/"  # for a backend mount: the path below the mount prefix
    pattern: str | None = None  # chi's RoutePattern() (None where chi's would be "")


def match(root: View, method: str, path: str) -> Match:
    view = root
    params: dict[str, str] | None = None
    seen: set[str] | None = None  # methods outer routers saw this path with
    joined: str | None = None  # mount patterns, once a mount point itself was requested
    while True:
        leaf, values, allowed = view.tree.find(method, path)
        if leaf is None:
            return _fallback(view, params, allowed, seen, joined)
        if allowed:
            seen = allowed if seen is None else seen | allowed
        if values:
            if params is None:
                params = {}
            params.update(zip(leaf.keys, values, strict=True))
        target = leaf.target
        if target.kind != SUBROUTER:
            if joined is not None:
                target = target.for_prefix(joined)
            found = params if params is not None else NO_PARAMS
            rest = "/" + found.get("*", "") if target.kind == BACKEND else "/"
            return _new(Match, (target, found, None, (), rest, target.pattern))
        # Into a mounted router: it sees "/" + whatever the mount's "*" caught (chi's
        # nextRoutePath); that "*" belongs to the mount, not to the final route.
        if joined is not None:
            joined += target.local
        elif not target.standard:
            joined = view.prefix + target.local
        rest = params.pop("*", "") if params is not None else ""
        path = "/" + rest
        view = target.view  # type: ignore[assignment]


def _fallback(view: View, params: dict[str, str] | None, allowed: set[str],
              seen: set[str] | None, joined: str | None) -> Match:
    found = params if params is not None else NO_PARAMS
    pattern = view.pattern if joined is None else (route_pattern(joined) or None)
    if view.empty:
        return Match(None, found, view.not_found, (), "/", pattern)
    if seen:
        allowed |= seen
    if allowed:
        return Match(None, found, view.method_not_allowed, tuple(sorted(allowed)), "/",
                     pattern)
    return Match(None, found, view.not_found, (), "/", pattern)


_new = tuple.__new__  # Match's own __new__ is a Python function: too slow per request
