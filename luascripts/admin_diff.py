"""Line diffs of two script sources, as rows a template can render without JavaScript.

Pure functions over strings: side by side (one row per line pair) and unified (git-style
hunks with three lines of context).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SideRow:
    kind: str  # "equal", "replace", "delete", "insert", "skip"
    old_no: int | None
    old: str
    new_no: int | None
    new: str


@dataclass(frozen=True, slots=True)
class UnifiedRow:
    kind: str  # "hunk", "context", "delete", "insert"
    old_no: int | None
    new_no: int | None
    text: str


@dataclass(frozen=True, slots=True)
class DiffStats:
    added: int
    removed: int

    @property
    def identical(self) -> bool:
        return self.added == 0 and self.removed == 0


def _lines(source: str) -> list[str]:
    return source.splitlines()


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
    a, b = _lines(old), _lines(new)
    rows: list[SideRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    opcodes = matcher.get_opcodes()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            span = list(range(i2 - i1))
            if context is not None and len(span) > 2 * context + 1:
                head = span[:context] if n > 0 else []
                tail = span[-context:] if n < len(opcodes) - 1 else []
                for k in head:
                    rows.append(SideRow("equal", i1 + k + 1, a[i1 + k], j1 + k + 1, b[j1 + k]))
                folded = len(span) - len(head) - len(tail)
                rows.append(SideRow("skip", None, f"{folded} unchanged lines", None, ""))
                for k in tail:
                    rows.append(SideRow("equal", i1 + k + 1, a[i1 + k], j1 + k + 1, b[j1 + k]))
            else:
                for k in span:
                    rows.append(SideRow("equal", i1 + k + 1, a[i1 + k], j1 + k + 1, b[j1 + k]))
            continue
        left = list(range(i1, i2))
        right = list(range(j1, j2))
        for k in range(max(len(left), len(right))):
            li = left[k] if k < len(left) else None
            rj = right[k] if k < len(right) else None
            kind = tag if tag != "replace" else (
                "replace" if li is not None and rj is not None else
                ("delete" if li is not None else "insert"))
            rows.append(SideRow(
                kind,
                li + 1 if li is not None else None, a[li] if li is not None else "",
                rj + 1 if rj is not None else None, b[rj] if rj is not None else "",
            ))
    return rows


def unified(old: str, new: str, *, context: int = 3) -> list[UnifiedRow]:
    a, b = _lines(old), _lines(new)
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
                    rows.append(UnifiedRow("context", a1 + k + 1, b1 + k + 1, a[a1 + k]))
                continue
            for k in range(a1, a2):
                rows.append(UnifiedRow("delete", k + 1, None, a[k]))
            for k in range(b1, b2):
                rows.append(UnifiedRow("insert", None, k + 1, b[k]))
    return rows


def unified_text(old: str, new: str, *, old_name: str, new_name: str) -> str:
    """The same diff as plain text (for copying or a download)."""
    return "".join(difflib.unified_diff(
        [line + "\n" for line in _lines(old)], [line + "\n" for line in _lines(new)],
        fromfile=old_name, tofile=new_name))
