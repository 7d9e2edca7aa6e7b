"""Per-request routing: walk the compiled views (through mounts) to a target or a fallback.

Pure functions over immutable data, no Lua: the result tells the script runner which chain
to call with which params, or lets it answer a 404/405 or an unguarded backend mount
without entering Lua at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from luascripts.engine.routes import BACKEND, SUBROUTER, Fallback, Target, View

NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class Match(NamedTuple):  # a tuple: built once per request, so it has to be cheap
    target: Target | None  # None: nothing matched, see `fallback`
    params: Mapping[str, str]
    fallback: Fallback | None = None
    allow: tuple[str, ...] = ()  # non-empty: 405 (the path exists for these methods)
    rest: str = "/"  # for a backend mount: the path below the mount prefix


def match(root: View, method: str, path: str) -> Match:
    view = root
    params: dict[str, str] | None = None
    while True:
        leaf, values, allowed = view.tree.find(method, path)
        if leaf is None:
            found = params if params is not None else NO_PARAMS
            if allowed:
                return Match(None, found, view.method_not_allowed, tuple(sorted(allowed)))
            return Match(None, found, view.not_found)
        if values:
            if params is None:
                params = {}
            params.update(zip(leaf.keys, values, strict=True))
        target = leaf.target
        if target.kind != SUBROUTER:
            found = params if params is not None else NO_PARAMS
            if target.kind == BACKEND:
                return Match(target, found, None, (), "/" + found.get("*", ""))
            return Match(target, found)
        # Into a mounted router: it sees "/" + whatever the mount's "*" caught (chi's
        # nextRoutePath); that "*" belongs to the mount, not to the final route.
        rest = params.pop("*", "") if params is not None else ""
        path = "/" + rest
        view = target.view  # type: ignore[assignment]
