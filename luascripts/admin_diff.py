"""Diffs of two script sources, as rows a template can render without JavaScript.

Pure functions over strings: side by side (one row per line pair) and unified (git-style
hunks with three lines of context). Each row carries its text as HTML too: Lua syntax colour
(luascripts.lua_tokens) and, on a changed line paired with its new form, the words that
changed marked (`<span class="tk-... chg">`). `route_changes` compares two route tables.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from luascripts import lua_tokens
from luascripts.lua_tokens import Token


@dataclass(frozen=True, slots=True)
class SideRow:
    kind: str  # "equal", "replace", "delete", "insert", "skip"
    old_no: int | None
    old: str
    new_no: int | None
    new: str
    old_html: SafeString = field(default=SafeString(""), compare=False)
    new_html: SafeString = field(default=SafeString(""), compare=False)


@dataclass(frozen=True, slots=True)
class UnifiedRow:
    kind: str  # "hunk", "context", "delete", "insert"
    old_no: int | None
    new_no: int | None
    text: str
    html: SafeString = field(default=SafeString(""), compare=False)


@dataclass(frozen=True, slots=True)
class DiffStats:
    added: int
    removed: int

    @property
    def identical(self) -> bool:
        return self.added == 0 and self.removed == 0


def _lines(source: str) -> list[str]:
    return source.splitlines()


class _Highlighter:
    """Per-line tokens of one source, rendered to HTML, with changed tokens marked."""

    def __init__(self, source: str) -> None:
        self.text = _lines(source)
        tokens = lua_tokens.lines(source)
        if len(tokens) != len(self.text):  # a lone CR or similar: colour nothing, stay right
            tokens = [[("name", line)] for line in self.text]
        self.tokens = tokens

    def html(self, index: int, changed: set[int] | None = None) -> SafeString:
        return _render(self.tokens[index], changed)


def _render(tokens: list[Token], changed: set[int] | None) -> SafeString:
    parts = []
    for position, (kind, text) in enumerate(tokens):
        mark = changed is not None and position in changed
        if kind == "space" and not mark:
            parts.append(escape(text))
        else:
            parts.append(f'<span class="tk-{kind}{" chg" if mark else ""}">{escape(text)}</span>')
    return mark_safe("".join(parts))


def _word_changes(old: list[Token], new: list[Token]) -> tuple[set[int], set[int]]:
    """Positions of the tokens that differ between a line and its new form."""
    matcher = difflib.SequenceMatcher(None, [t[1] for t in old], [t[1] for t in new],
                                      autojunk=False)
    gone: set[int] = set()
    came: set[int] = set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            gone.update(range(i1, i2))
            came.update(range(j1, j2))
    return gone, came


def _pair_html(a: _Highlighter, i: int, b: _Highlighter, j: int
               ) -> tuple[SafeString, SafeString]:
    gone, came = _word_changes(a.tokens[i], b.tokens[j])
    return a.html(i, gone), b.html(j, came)


def stats(old: str, new: str) -> DiffStats:
    added = removed = 0
    matcher = difflib.SequenceMatcher(None, _lines(old), _lines(new), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return DiffStats(added=added, removed=removed)


def side_by_side(old: str, new: str, *, context: int | None = 3) -> list[SideRow]:
    """Paired rows; runs of unchanged lines longer than 2*context are folded into "skip"."""
    ha, hb = _Highlighter(old), _Highlighter(new)
    a, b = ha.text, hb.text
    rows: list[SideRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    opcodes = matcher.get_opcodes()

    def equal(i: int, j: int) -> SideRow:
        return SideRow("equal", i + 1, a[i], j + 1, b[j], ha.html(i), hb.html(j))

    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            span = list(range(i2 - i1))
            if context is not None and len(span) > 2 * context + 1:
                head = span[:context] if n > 0 else []
                tail = span[-context:] if n < len(opcodes) - 1 else []
                rows += [equal(i1 + k, j1 + k) for k in head]
                folded = len(span) - len(head) - len(tail)
                rows.append(SideRow("skip", None, f"{folded} unchanged lines", None, ""))
                rows += [equal(i1 + k, j1 + k) for k in tail]
            else:
                rows += [equal(i1 + k, j1 + k) for k in span]
            continue
        left = list(range(i1, i2))
        right = list(range(j1, j2))
        for k in range(max(len(left), len(right))):
            li = left[k] if k < len(left) else None
            rj = right[k] if k < len(right) else None
            if li is not None and rj is not None:
                old_html, new_html = _pair_html(ha, li, hb, rj)
                rows.append(SideRow("replace", li + 1, a[li], rj + 1, b[rj], old_html, new_html))
            elif li is not None:
                rows.append(SideRow("delete", li + 1, a[li], None, "", ha.html(li)))
            else:
                assert rj is not None
                rows.append(SideRow("insert", None, "", rj + 1, b[rj], SafeString(""),
                                    hb.html(rj)))
    return rows


def unified(old: str, new: str, *, context: int = 3) -> list[UnifiedRow]:
    ha, hb = _Highlighter(old), _Highlighter(new)
    a, b = ha.text, hb.text
    rows: list[UnifiedRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        i1, i2, j1, j2 = first[1], last[2], first[3], last[4]
        rows.append(UnifiedRow("hunk", None, None,
                               f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@"))
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                for k in range(a2 - a1):
                    rows.append(UnifiedRow("context", a1 + k + 1, b1 + k + 1, a[a1 + k],
                                           ha.html(a1 + k)))
                continue
            paired = min(a2 - a1, b2 - b1) if tag == "replace" else 0
            pairs = {k: _pair_html(ha, a1 + k, hb, b1 + k) for k in range(paired)}
            for k in range(a1, a2):
                html = pairs[k - a1][0] if k - a1 in pairs else ha.html(k)
                rows.append(UnifiedRow("delete", k + 1, None, a[k], html))
            for k in range(b1, b2):
                html = pairs[k - b1][1] if k - b1 in pairs else hb.html(k)
                rows.append(UnifiedRow("insert", None, k + 1, b[k], html))
    return rows


def unified_text(old: str, new: str, *, old_name: str, new_name: str) -> str:
    """The same diff as plain text (for copying or a download)."""
    return "".join(difflib.unified_diff(
        [line + "\n" for line in _lines(old)], [line + "\n" for line in _lines(new)],
        fromfile=old_name, tofile=new_name))


def highlight(source: str) -> list[SafeString]:
    """Each line of `source` as coloured HTML."""
    h = _Highlighter(source)
    return [h.html(i) for i in range(len(h.text))]


@dataclass(frozen=True, slots=True)
class RouteChanges:
    added: list[dict]
    removed: list[dict]
    changed: list[tuple[dict, dict]]  # (old, new)

    @property
    def none(self) -> bool:
        return not (self.added or self.removed or self.changed)


def route_changes(old: list[dict] | None, new: list[dict] | None) -> RouteChanges:
    """Routes added, removed and changed (their middleware or target), by method and
    pattern, between two stored route tables (ScriptVersion.routes)."""
    def key(route: dict) -> tuple[str, str]:
        return (str(route.get("method", "")), str(route.get("pattern", "")))

    before = {key(r): r for r in old or []}
    after = {key(r): r for r in new or []}
    added = [after[k] for k in after if k not in before]
    removed = [before[k] for k in before if k not in after]
    changed = [(before[k], after[k]) for k in after if k in before
               and (before[k].get("middleware"), before[k].get("target"))
               != (after[k].get("middleware"), after[k].get("target"))]
    return RouteChanges(added=added, removed=removed, changed=changed)
