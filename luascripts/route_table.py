"""A version's route table as stored, and what changed between two of them.

The one implementation behind the publish answer, `chistone diff` (through the API) and the
admin's diff and activation pages. Rows are stored with the version (ScriptVersion.routes):
method, full pattern, middleware count, target and the middleware's labels, local functions
named from the source (luascripts.middleware_names). Two tables are compared by method and
pattern; a route changed when its middleware *names* or its target differ. Names, not lines:
moving code around does not read as a change. Rows stored before labels existed carry only
a count, and are compared by count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from luascripts.middleware_names import name_labels

_LINE = re.compile(r"\s*\((?:line \d+)\)$")


def stored_rows(routes: Iterable[Any], source: str) -> list[dict[str, Any]]:
    """The rows to store for a version: RouteInfo.to_dict() with named labels."""
    rows = []
    for route in routes:
        row = route.to_dict()
        row["labels"] = name_labels(row.get("labels") or (), source)
        rows.append(row)
    return rows


def middleware_names(row: Mapping[str, Any]) -> tuple[str, ...] | int:
    """What a route's middleware is, for comparison: its names outermost first ("auth",
    "anonymous"), or only their number for a row stored without labels."""
    labels = row.get("labels")
    if labels is None:
        return int(row.get("middleware") or 0)
    names = []
    for label in labels:
        name = _LINE.sub("", str(label))
        names.append(name if name and not name.startswith("line ") else "anonymous")
    return tuple(names)


def describe_middleware(row: Mapping[str, Any]) -> str:
    names = middleware_names(row)
    if isinstance(names, int):
        return f"{names} middleware"
    return " \u2192 ".join(names) if names else "none"


@dataclass(frozen=True, slots=True)
class RouteChange:
    old: Mapping[str, Any]
    new: Mapping[str, Any]
    middleware: bool  # the middleware names changed
    target: bool  # the target changed (a mount's backend, or a handler <-> mount)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.new.get("method"),
                               "pattern": self.new.get("pattern")}
        if self.middleware:
            out["middleware"] = [_names_json(self.old), _names_json(self.new)]
        if self.target:
            out["target"] = [self.old.get("target") or "", self.new.get("target") or ""]
        return out

    @property
    def old_middleware(self) -> str:
        return describe_middleware(self.old)

    @property
    def new_middleware(self) -> str:
        return describe_middleware(self.new)


def _names_json(row: Mapping[str, Any]) -> list[str] | int:
    names = middleware_names(row)
    return names if isinstance(names, int) else list(names)


def _summary(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"method": row.get("method"), "pattern": row.get("pattern"),
            "target": row.get("target") or "", "middleware": _names_json(row)}


@dataclass(frozen=True, slots=True)
class RouteChanges:
    added: list[Mapping[str, Any]]
    removed: list[Mapping[str, Any]]
    changed: list[RouteChange]

    @property
    def none(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": [_summary(r) for r in self.added],
                "removed": [_summary(r) for r in self.removed],
                "changed": [c.to_dict() for c in self.changed]}

    def lines(self) -> list[str]:
        """One line per change, for a terminal: `+ GET /x`, `- GET /y`, `~ GET /z: ...`."""
        out = []
        for row in self.added:
            out.append(f"+ {row.get('method')} {row.get('pattern')}"
                       + (f" -> {row['target']}" if row.get("target") else ""))
        for row in self.removed:
            out.append(f"- {row.get('method')} {row.get('pattern')}")
        for change in self.changed:
            what = []
            if change.middleware:
                what.append(f"middleware {change.old_middleware} -> {change.new_middleware}")
            if change.target:
                what.append(f"target {change.old.get('target') or 'Lua handler'} -> "
                            f"{change.new.get('target') or 'Lua handler'}")
            out.append(f"~ {change.new.get('method')} {change.new.get('pattern')}: "
                       + ", ".join(what))
        return out


def route_changes(old: Sequence[Mapping[str, Any]] | None,
                  new: Sequence[Mapping[str, Any]] | None) -> RouteChanges:
    """Routes added, removed and changed (middleware names or target), by method and
    pattern, from the table `old` to the table `new`."""
    def key(route: Mapping[str, Any]) -> tuple[str, str]:
        return (str(route.get("method", "")), str(route.get("pattern", "")))

    before = {key(r): r for r in old or []}
    after = {key(r): r for r in new or []}
    added = [after[k] for k in after if k not in before]
    removed = [before[k] for k in before if k not in after]
    changed = []
    for k in after:
        if k not in before:
            continue
        a, b = before[k], after[k]
        names_a, names_b = middleware_names(a), middleware_names(b)
        if isinstance(names_a, int) != isinstance(names_b, int):  # one row predates labels
            names_a = names_a if isinstance(names_a, int) else len(names_a)
            names_b = names_b if isinstance(names_b, int) else len(names_b)
        middleware = names_a != names_b
        target = (a.get("target") or "") != (b.get("target") or "")
        if middleware or target:
            changed.append(RouteChange(a, b, middleware, target))
    return RouteChanges(added=added, removed=removed, changed=changed)
