"""Name the middleware of a dry run from the script's source.

The engine labels a middleware "name (line N)" when it is a global function and "line N"
(the line it was defined on) otherwise; once a script has registered, Lua no longer knows
the names of its locals. The source does: `local function auth(req, next)` or
`local auth = function(req, next)` on line N names it "auth". An inline
`chi.use(function(req, next) ...)` stays "anonymous (line N)".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LINE_ONLY = re.compile(r"^line (\d+)$")
_DEFINITIONS = (
    re.compile(r"\bfunction\s+([A-Za-z_][\w.:]*)\s*\("),  # [local] function name(
    re.compile(r"\b([A-Za-z_][\w.]*)\s*=\s*function\s*\("),  # [local] name = function(
    re.compile(r"\[\s*[\"']([^\"']+)[\"']\s*\]\s*=\s*function\s*\("),  # ["name"] = function(
)


def name_from_line(text: str) -> str | None:
    """The name a line gives to the function defined on it; None when the line defines
    an anonymous function or more than one (then the line alone cannot tell which)."""
    if len(re.findall(r"\bfunction\b", text)) != 1:
        return None
    for pattern in _DEFINITIONS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def name_labels(labels: Iterable[str], source: str | None) -> list[str]:
    """The dry run's middleware labels with local functions named from `source`."""
    lines = source.splitlines() if source else []
    out = []
    for label in labels:
        match = _LINE_ONLY.match(label)
        if match is None:
            out.append(label)
            continue
        number = int(match.group(1))
        name = name_from_line(lines[number - 1]) if 0 < number <= len(lines) else None
        out.append(f"{name} ({label})" if name else f"anonymous ({label})")
    return out
