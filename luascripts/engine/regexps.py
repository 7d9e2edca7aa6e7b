"""`{name:regexp}` params: compiled once, matched in Python, with a bound on their cost.

chi uses Go's RE2, which runs in linear time. Python's `re` backtracks, so a tenant's
`{x:(a+)+$}` could stall the gateway for minutes on one request. Compilation therefore
(1) refuses what RE2 refuses anyway (lookarounds, backreferences, atomic groups, possessive
quantifiers) and ambiguous nested repetition, and (2) estimates the polynomial degree of what
is left: each repetition that can trade characters with what follows it multiplies the work by
the value's length. A regexp of degree d only tests values short enough that n**d / d! stays
under STEP_BUDGET; longer values simply do not match that param (documented in scripting.md).
"""

from __future__ import annotations

import math
import re
import re._constants as sre
import re._parser as sre_parse
from dataclasses import dataclass
from typing import Any

STEP_BUDGET = 100_000  # about 5 ms of `re` backtracking in the worst case
MAX_REGEXP_CHARS = 512
UNBOUNDED = 1 << 62  # stands for "no length cap"

_REFUSED = {
    sre.ASSERT: "lookarounds", sre.ASSERT_NOT: "lookarounds",
    sre.GROUPREF: "backreferences", sre.GROUPREF_EXISTS: "conditional groups",
    sre.ATOMIC_GROUP: "atomic groups", sre.POSSESSIVE_REPEAT: "possessive quantifiers",
}
_SINGLE = {sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN, sre.CATEGORY}
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT}


class RegexpError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ParamRegexp:
    source: str  # as written in the pattern (chi's '^'/'$' included or not)
    regex: re.Pattern[str]
    max_len: int  # values longer than this are not tested (cost bound)

    def matches(self, value: str) -> bool:
        # `regex` is anchored as chi anchors it, so `search` is chi's MatchString (a value
        # never holds a newline, where Python's `$` and Go's would differ).
        return len(value) <= self.max_len and self.regex.search(value) is not None


def compile_param_regexp(source: str) -> ParamRegexp:
    body = source
    # chi anchors the regexp itself ('^' + re + '$'); accept explicit anchors and drop them.
    if body.startswith("^"):
        body = body[1:]
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    if not body:
        raise RegexpError("the regexp is empty")
    if len(body) > MAX_REGEXP_CHARS:
        raise RegexpError(f"the regexp is longer than {MAX_REGEXP_CHARS} characters")
    # What chi matches with: '^' and '$' added only where missing, so a top-level
    # alternation binds them to its first and last branch (`{x:a|b}` is "^a|b$", values
    # starting with "a" or ending with "b"), and a trailing "\\$" counts as an anchor.
    anchored = source if source.startswith("^") else "^" + source
    if not anchored.endswith("$"):
        anchored += "$"
    try:
        regex = re.compile(anchored)
        parsed = sre_parse.parse(body)
    except re.error as exc:
        raise RegexpError(str(exc)) from None
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    degree, optional = _Analysis(ignore_case).sequence(list(parsed.data), at_end=True)
    return ParamRegexp(source, regex, _max_len(degree, optional))


def _max_len(degree: int, optional: int) -> int:
    if degree <= 1:
        return UNBOUNDED
    factor = 2 ** min(optional, 40)
    n = 1
    while n < 1 << 20 and factor * (n + 1) ** degree / math.factorial(degree) <= STEP_BUDGET:
        n += 1
    if n < 8:
        raise RegexpError("the regexp has too many overlapping repetitions to be matched safely")
    return n


class _Analysis:
    """Counts multiplying repetitions (degree) and optional items in a parsed regexp."""

    def __init__(self, ignore_case: bool) -> None:
        self.ignore_case = ignore_case

    def sequence(self, items: list[tuple[Any, Any]], *, at_end: bool) -> tuple[int, int]:
        multiplying, linear, optional = 0, 0, 0
        for index, (op, av) in enumerate(items):
            if op in _REFUSED:
                raise RegexpError(f"{_REFUSED[op]} are not supported (chi uses RE2 syntax)")
            following = items[index + 1] if index + 1 < len(items) else None
            last = following is None and at_end
            if op in _REPEATS:
                low, high, body = av[0], av[1], list(av[2])
                if high <= 1:
                    optional += 1
                if len(body) == 1 and body[0][0] in _SINGLE:
                    if low == high:
                        continue
                    if last or self._disjoint_next(body[0], following):
                        linear += 1
                    else:
                        multiplying += 1
                    continue
                inner, inner_opt = self.sequence(body, at_end=False)
                optional += inner_opt
                if high <= 1:
                    multiplying += inner
                elif inner or not _is_fixed(body):
                    if not self._separated(body):
                        raise RegexpError(
                            "a repeated group that contains a repetition or an alternation "
                            "(like (a+)+ or (a|aa)*) can take exponential time; simplify it")
                    multiplying += 1
                elif low != high:
                    multiplying += 1
            elif op == sre.SUBPATTERN:
                inner, inner_opt = self.sequence(list(av[-1]), at_end=last)
                multiplying, optional = multiplying + inner, optional + inner_opt
            elif op == sre.BRANCH:
                results = [self.sequence(list(alt), at_end=last) for alt in av[1]]
                multiplying += max(r[0] for r in results)
                optional += max(r[1] for r in results)
        return multiplying + (1 if linear else 0), optional

    def _disjoint_next(self, item: tuple[Any, Any], following: tuple[Any, Any] | None) -> bool:
        """True when `following` must consume one character that `item` can never match."""
        if following is None:
            return False
        op, av = following
        if op in _REPEATS and av[0] >= 1 and len(av[2]) == 1 and av[2][0][0] in _SINGLE:
            following = av[2][0]
        elif op not in _SINGLE:
            return False
        mine, theirs = self._charset(item), self._charset(following)
        return mine is not None and theirs is not None and not (mine & theirs)

    def _separated(self, body: list[tuple[Any, Any]]) -> bool:
        """A repeated group like (-[a-z]+) whose iterations cannot overlap: it starts with a
        mandatory character none of its repetitions can consume, and nests nothing deeper."""
        first = body[0]
        if first[0] not in _SINGLE:
            return False
        lead = self._charset(first)
        if lead is None:
            return False
        for op, av in body[1:]:
            if op in _SINGLE:
                continue
            if op in _REPEATS and len(av[2]) == 1 and av[2][0][0] in _SINGLE:
                inner = self._charset(av[2][0])
                if inner is None or inner & lead:
                    return False
                continue
            return False
        return True

    def _charset(self, item: tuple[Any, Any]) -> frozenset[int] | None:
        """The characters (code points < 256) an item matches; None when unknown or huge."""
        if self.ignore_case:
            return None
        op, av = item
        if op == sre.LITERAL:
            return frozenset((av,))
        if op == sre.NOT_LITERAL:
            return _ALL - {av}
        if op == sre.ANY:
            return _ALL - {10}
        if op == sre.CATEGORY:
            return _CATEGORIES.get(av)
        if op == sre.IN:
            chars: set[int] = set()
            negate = False
            for sub_op, sub_av in av:
                if sub_op == sre.NEGATE:
                    negate = True
                elif sub_op == sre.LITERAL:
                    chars.add(sub_av)
                elif sub_op == sre.RANGE:
                    chars.update(range(sub_av[0], min(sub_av[1], 255) + 1))
                elif sub_op == sre.CATEGORY and sub_av in _CATEGORIES:
                    chars |= _CATEGORIES[sub_av]
                else:
                    return None
            return _ALL - chars if negate else frozenset(chars)
        return None


def _is_fixed(items: list[tuple[Any, Any]]) -> bool:
    """True when `items` always match the same number of characters one way only."""
    for op, av in items:
        if op in _SINGLE or op == sre.AT:
            continue
        if op == sre.SUBPATTERN and _is_fixed(list(av[-1])):
            continue
        if op in _REPEATS and av[0] == av[1] and _is_fixed(list(av[2])):
            continue
        return False
    return True


_ALL = frozenset(range(256))


def _category(expr: str) -> frozenset[int]:
    rx = re.compile(expr)
    return frozenset(c for c in range(256) if rx.fullmatch(chr(c)))


# Code points >= 256 are ignored: request paths reach the matcher as ASCII (percent-encoded).
_CATEGORIES = {
    sre.CATEGORY_DIGIT: _category(r"\d"), sre.CATEGORY_NOT_DIGIT: _category(r"\D"),
    sre.CATEGORY_WORD: _category(r"\w"), sre.CATEGORY_NOT_WORD: _category(r"\W"),
    sre.CATEGORY_SPACE: _category(r"\s"), sre.CATEGORY_NOT_SPACE: _category(r"\S"),
}
