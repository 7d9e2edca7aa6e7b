"""From the records a script's registration left behind to compiled, matchable route views.

Registration (router.lua) records every route, mount, not_found and method_not_allowed per
mux with its script line. Here those records become:

* diagnostics for every pattern chi would refuse, every mount on a path the router already
  serves (chi's Mount() check, asked of a scratch tree of the router as it stood at that
  call), every unknown literal backend in a mount, and mount cycles, each with its line;
* one *view* per place a mux is reachable from the root (a mux mounted twice has two views,
  since the middleware before it and the pattern prefix differ). A view owns a `Tree` whose
  leaves are `Target`s carrying everything a request needs: the full pattern, the middleware
  chain (as an id the Lua side knows) and what to do (handler, backend, sub-router);
* the chains to define in Lua (middleware function ids + terminal) and the route table.

Chains run mux middleware first, outermost mux first, then inline (`with`) middleware, as in
chi. A fallback (404/405) of a view runs the middleware of every mux on the way, then the
router's not_found / method_not_allowed handler, or the router's default. A router gets its
parent's handler the way chi hands it down, in registration order: when it is mounted
without one of its own, and when the parent sets one later while it still has none.

Route patterns are chi's RoutePattern(): the patterns matched at each level joined, then
normalised (patterns.route_pattern). A mount registers three patterns (`/api`, `/api/` and
`/api/*`); a view's `prefix` is the join through the `/*` ones, which every path below a
mount goes through. The two others only serve the mount point itself, and the few targets
reached that way get their pattern from `Target.for_prefix`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from luascripts.engine.boundary import registration_records
from luascripts.engine.patterns import (
    Param,
    PatternError,
    Token,
    parse_pattern,
    regexp_key,
    route_pattern,
)
from luascripts.engine.source import lua_text as _text
from luascripts.engine.tree import Tree, TreeTooDeep
from luascripts.engine.types import Diagnostic, RouteInfo

HANDLER, BACKEND, SUBROUTER = 1, 2, 3
TERMINAL_ROUTER_DEFAULT = 0  # Lua terminal answering the router's own 404/405
TERMINAL_MOUNT = -1  # Lua terminal proxying to a mounted backend
NO_LUA = 0  # chain id meaning "nothing to run in Lua: answer in Python"
MAX_ROUTES = 5000
MAX_MOUNT_DEPTH = 16
MAX_VARIANTS = 64  # per target; a path can only reach a handful (see Target.for_prefix)


@dataclass(frozen=True, slots=True)
class Target:
    kind: int
    pattern: str  # chi's RoutePattern() for this target, reached through `/*` mount patterns
    chain: int  # Lua chain id, or NO_LUA
    labels: tuple[str, ...]  # middleware labels, outermost first
    backend: str = ""
    view: View | None = None
    local: str = ""  # the pattern as registered in its own router (a mount's: one of three)
    standard: bool = True  # False for a mount's `/api` and `/api/` patterns
    variants: dict[str, Target] = field(default_factory=dict, compare=False, repr=False)

    def for_prefix(self, joined: str) -> Target:
        """This target as reached through the mount patterns `joined` rather than through
        its view's prefix: only when a mount point itself was requested (`/api` or `/api/`,
        the mounted router then sees "/"), so at most three per mount on the way."""
        variant = self.variants.get(joined)
        if variant is None:
            variant = replace(self, pattern=route_pattern(joined + self.local), variants={})
            if len(self.variants) < MAX_VARIANTS:
                self.variants[joined] = variant
        return variant


@dataclass(frozen=True, slots=True)
class Fallback:
    chain: int
    labels: tuple[str, ...]


@dataclass(slots=True)
class View:
    tree: Tree
    not_found: Fallback
    method_not_allowed: Fallback
    prefix: str = ""  # the mount patterns joined on the way here ("/api/*" + "/v1/*")
    pattern: str | None = None  # what a 404/405 here reports: RoutePattern(prefix) or None
    empty: bool = False  # no routes: chi answers not-found at once, whatever it saw before


@dataclass(slots=True)
class _Special:
    handler: int
    mws: tuple[int, ...]


@dataclass(slots=True)
class _Entry:
    kind: str  # "route" | "mount"
    line: int
    mws: tuple[int, ...]
    method: str = ""
    pattern: str = ""
    handler: int = 0
    tokens: tuple[Token, ...] = ()
    stubs: tuple[tuple[str, tuple[Token, ...]], ...] = ()  # a mount's (pattern, tokens)
    target_kind: str = ""
    target: str = ""


@dataclass(slots=True)
class _Mux:
    id: int
    mws: tuple[int, ...] = ()
    entries: list[_Entry] = field(default_factory=list)
    not_found: _Special | None = None
    method_not_allowed: _Special | None = None
    # The router's patterns so far, as chi's tree would hold them when mount() is called.
    registered: Tree = field(default_factory=Tree)
    mounted: list[int] = field(default_factory=list)  # routers mounted here so far
    used: bool = False  # a route, mount, group or with() was registered on it


@dataclass(slots=True)
class CompiledRoutes:
    root: View
    routes: tuple[RouteInfo, ...]
    chains: list[int]  # flat, for K.define_chains: len, ids..., len, ids...
    warnings: tuple[Diagnostic, ...] = ()  # handlers that never run


def _shape(token: Token) -> Any:
    """A pattern token as chi's tree tells routes apart: params by position, not by name."""
    if isinstance(token, Param):
        return ("param", token.tail, regexp_key(token))
    return token


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",")) if text else ()


class _Builder:
    def __init__(self, flat: Sequence[object], backend_names: Collection[str] | None) -> None:
        self.backends = None if backend_names is None else set(backend_names)
        self.errors: list[Diagnostic] = []
        # Handlers a later registration replaces (chi keeps the last): never run.
        self.warnings: list[Diagnostic] = []
        self._registered: dict[tuple[int, tuple[Any, ...]], dict[str, tuple[int, str]]] = {}
        self.muxes: dict[int, _Mux] = {}
        self.labels: dict[int, str] = {}
        self.chain_ids: dict[tuple[int, ...], int] = {}
        self.chain_flat: list[int] = []
        self.routes: list[RouteInfo] = []
        self._read(flat)

    # -- records --------------------------------------------------------------------------

    def _mux(self, mux_id: int) -> _Mux:
        mux = self.muxes.get(mux_id)
        if mux is None:
            mux = self.muxes[mux_id] = _Mux(mux_id)
        return mux

    def _read(self, flat: Sequence[object]) -> None:
        for r in registration_records(flat):
            kind, line = r["kind"], int(r["line"] or 0)
            if kind == "mux":
                mux = self._mux(int(r["mux"]))
                mux.mws = _ids(str(r["middleware"]))
                mux.used = bool(r["used"])
            elif kind == "label":
                self.labels[int(r["function"])] = _text(str(r["label"]))
            elif kind == "route":
                self._route(self._mux(int(r["mux"])), str(r["method"]), str(r["pattern"]),
                            int(r["handler"]), _ids(str(r["middleware"])), line)
            elif kind == "mount":
                self._mount(self._mux(int(r["mux"])), str(r["prefix"]), str(r["target_kind"]),
                            str(r["target"]), _ids(str(r["middleware"])), line)
            else:  # not_found, method_not_allowed
                special = _Special(int(r["handler"]), _ids(str(r["middleware"])))
                mux = self._mux(int(r["mux"]))
                setattr(mux, kind, special)
                self._hand_down(mux, kind, special, set())

    def _hand_down(self, mux: _Mux, kind: str, special: _Special, seen: set[int]) -> None:
        """chi's updateSubRoutes: routers mounted here that have no such handler yet take
        this one, and hand it down to theirs."""
        for child_id in mux.mounted:
            child = self._mux(child_id)
            if child_id not in seen and getattr(child, kind) is None:
                seen.add(child_id)
                setattr(child, kind, special)
                self._hand_down(child, kind, special, seen)

    def _parse(self, pattern: str, line: int) -> tuple[Token, ...] | None:
        try:
            return parse_pattern(pattern)
        except PatternError as exc:
            self.errors.append(Diagnostic(line or None, None, _text(str(exc))))
            return None

    def _route(self, mux: _Mux, method: str, pattern: str, handler: int,
               mws: tuple[int, ...], line: int) -> None:
        tokens = self._parse(pattern, line)
        if tokens is not None:
            self._note_replaced(mux, method, pattern, tokens, line)
            mux.registered.insert(method, tokens, None)
            mux.entries.append(_Entry("route", line, mws, method=method, pattern=pattern,
                                      handler=handler, tokens=tokens))

    def _note_replaced(self, mux: _Mux, method: str, pattern: str,
                       tokens: tuple[Token, ...], line: int) -> None:
        """A route registered again for the same method and pattern (params compared by
        position, as chi's tree keys them) replaces the earlier handler: chi keeps the last.
        "*" replaces every method's handler at that pattern."""
        by_method = self._registered.setdefault((mux.id, tuple(map(_shape, tokens))), {})
        replaced = list(by_method.items()) if method == "*" else \
            [(method, by_method[method])] if method in by_method else []
        for name, (old_line, old_pattern) in replaced:
            self.warnings.append(Diagnostic(old_line or None, None, (
                f"{name} {_text(old_pattern)} never runs: line {line} registers {method} "
                f"{_text(pattern)} again, and chi keeps the last handler")))
            del by_method[name]
        by_method[method] = (line, pattern)

    def _mount(self, mux: _Mux, prefix: str, target_kind: str, target: str,
               mws: tuple[int, ...], line: int) -> None:
        # chi's Mount(): the prefix itself and prefix + "/" (unless it ends with "/"), then
        # the catch-all the mounted router is reached through.
        if prefix.endswith("/"):
            stub_patterns = [prefix + "*"]
        else:
            stub_patterns = [prefix, prefix + "/", prefix + "/*"]
        stubs = []
        for pattern in stub_patterns:
            tokens = self._parse(pattern, line)
            if tokens is None:
                return
            stubs.append(tokens)
        if mux.registered.find_pattern(prefix + "*") \
                or mux.registered.find_pattern(prefix + "/*"):
            self.errors.append(Diagnostic(
                line or None, None,
                f"attempting to mount() a handler on an existing path, {_text(prefix)!r}: "
                "this router already has a mount or a '/*' route there (chi compares params "
                "by position, not by name)"))
            return
        for tokens in stubs:
            mux.registered.insert("*", tokens, None)
        if target_kind == "backend" and self.backends is not None \
                and target not in self.backends:
            known = ", ".join(sorted(self.backends)) or "no backends"
            self.errors.append(Diagnostic(
                line or None, None,
                f"mount({prefix!r}, ...): unknown backend {_text(target)!r} "
                f"(this tenant has: {known})"))
            return
        if target_kind == "router":
            # chi's Mount(): a router without its own not-found / method-not-allowed
            # handler takes the parent's, as the parent has it now.
            child = self._mux(int(target))
            mux.mounted.append(child.id)
            for kind in ("not_found", "method_not_allowed"):
                special = getattr(mux, kind)
                if special is not None and getattr(child, kind) is None:
                    setattr(child, kind, special)
                    self._hand_down(child, kind, special, {child.id})
        mux.entries.append(_Entry("mount", line, mws, pattern=prefix,
                                  stubs=tuple(zip(stub_patterns, stubs, strict=True)),
                                  target_kind=target_kind, target=target))

    # -- chains ---------------------------------------------------------------------------

    def _chain(self, mws: tuple[int, ...], terminal: int) -> int:
        key = (*mws, terminal)
        chain_id = self.chain_ids.get(key)
        if chain_id is None:
            chain_id = self.chain_ids[key] = len(self.chain_ids) + 1
            self.chain_flat.append(len(key))
            self.chain_flat.extend(key)
        return chain_id

    def _labels(self, mws: tuple[int, ...]) -> tuple[str, ...]:
        return tuple(self.labels.get(m, f"middleware#{m}") for m in mws)

    def _fallback(self, mws: tuple[int, ...], special: _Special | None) -> Fallback:
        if special is None:
            if not mws:
                return Fallback(NO_LUA, ())
            return Fallback(self._chain(mws, TERMINAL_ROUTER_DEFAULT), self._labels(mws))
        all_mws = mws + special.mws
        return Fallback(self._chain(all_mws, special.handler), self._labels(all_mws))

    # -- views ----------------------------------------------------------------------------

    def view(self, mux_id: int, prefix: str, outer: tuple[int, ...],
             stack: tuple[int, ...]) -> View:
        """The view of `mux` reached through the mount patterns `prefix`, below the
        middleware `outer`."""
        mux = self._mux(mux_id)
        mws = outer + mux.mws
        tree = Tree()
        for entry in mux.entries:
            if len(self.routes) > MAX_ROUTES:
                self.errors.append(Diagnostic(None, None, f"more than {MAX_ROUTES} routes "
                                              "once mounted routers are expanded"))
                break
            entry_mws = mws + entry.mws
            if entry.kind == "route":
                target = Target(HANDLER, route_pattern(prefix + entry.pattern),
                                self._chain(entry_mws, entry.handler), self._labels(entry_mws),
                                local=entry.pattern)
                tree.insert(entry.method, entry.tokens, target)
                self.routes.append(RouteInfo(entry.method, _text(target.pattern),
                                             len(entry_mws)))
                continue
            through = entry.stubs[-1][0]  # the mount's "/*" pattern
            if entry.target_kind == "backend":
                chain = self._chain(entry_mws, TERMINAL_MOUNT) if entry_mws else NO_LUA
                labels, backend = self._labels(entry_mws), _text(entry.target)
                for local, tokens in entry.stubs:
                    tree.insert("*", tokens, Target(
                        BACKEND, route_pattern(prefix + local), chain, labels, backend=backend,
                        local=local, standard=local == through))
                self.routes.append(RouteInfo("*", _text(route_pattern(prefix + through)),
                                             len(entry_mws), f"backend:{backend}"))
                continue
            child_id = int(entry.target)
            if child_id in stack or len(stack) >= MAX_MOUNT_DEPTH:
                self.errors.append(Diagnostic(
                    entry.line or None, None,
                    f"mount({entry.pattern!r}, ...): a router cannot be mounted inside itself"))
                continue
            child = self.view(child_id, prefix + through, entry_mws, (*stack, child_id))
            for local, tokens in entry.stubs:
                tree.insert("*", tokens, Target(
                    SUBROUTER, route_pattern(prefix + local), NO_LUA, (), view=child,
                    local=local, standard=local == through))
        try:
            tree.seal()
        except TreeTooDeep as exc:
            self.errors.append(Diagnostic(None, None, str(exc)))
        # chi answers for a router with no routes without running its middleware (its
        # ServeHTTP goes straight to the not-found handler).
        # A router that only has group() or with() calls is not empty for chi.
        used = bool(mux.entries) or mux.used
        fallback_mws = mws if used else outer
        return View(tree, self._fallback(fallback_mws, mux.not_found),
                    self._fallback(fallback_mws, mux.method_not_allowed), prefix,
                    route_pattern(prefix) or None, not used)


def compile_routes(flat: Sequence[object], backend_names: Collection[str] | None,
                   ) -> tuple[CompiledRoutes | None, list[Diagnostic]]:
    """Build the root view from an export of records; (None, errors) when anything is wrong."""
    builder = _Builder(flat, backend_names)
    root = builder.view(1, "", (), (1,))
    if builder.errors:
        return None, builder.errors
    warnings = tuple(sorted(builder.warnings, key=lambda d: d.line or 0))
    return CompiledRoutes(root, tuple(builder.routes), builder.chain_flat, warnings), []


def pattern_errors(flat: Sequence[object], backend_names: Collection[str] | None,
                   ) -> list[Diagnostic]:
    """Only the per-record problems (used after a registration that failed part-way)."""
    return _Builder(flat, backend_names).errors
