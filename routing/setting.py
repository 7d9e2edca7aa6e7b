"""A setting's declaration (environment variable, default, parser, meaning) and its reader.

Each layer declares its settings in one table (`routing.conf` for the data plane,
`chistone_site.conf` for the rest) and reads them through typed accessors built on these
declarations, so a default is written once and `docs/operations.md` can be checked against
the tables. Plain Python with no Django: the `chistone` CLI and the worker before Django is
set up use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # the key in settings.CHISTONE; the variable is CHISTONE_<key> unless `env` says
    default: Any
    parse: Callable[[str], Any]
    help: str
    env: str = ""
    # How the docs write a default computed at run time (a callable: computed when shown).
    shown_default: str | Callable[[], str] = ""
    internal: bool = False  # set by `serve` for its own child processes, not by operators

    @property
    def variable(self) -> str:
        return self.env or f"CHISTONE_{self.key}"

    @property
    def documented_default(self) -> str:
        if callable(self.shown_default):
            return self.shown_default()
        if self.shown_default:
            return self.shown_default
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if self.default in (None, "", ()):
            return "none"
        if isinstance(self.default, tuple):
            return ",".join(str(item) for item in self.default)
        return str(self.default)

    def read(self, environ: Mapping[str, str]) -> Any:
        """The parsed value of the variable, or the default when it is unset or empty."""
        raw = environ.get(self.variable)
        if raw is None or not raw.strip():
            return self.default
        try:
            return self.parse(raw.strip())
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{self.variable} {exc}") from None


def read_set(table: Iterable[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    """{key: parsed value} for the variables of `table` that are set (non-empty) in environ."""
    return {setting.key: setting.read(environ) for setting in table
            if (environ.get(setting.variable) or "").strip()}


def merged(table: Iterable[Setting], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Every key of `table`: its value in `overrides` (settings.CHISTONE), else its default."""
    return {setting.key: overrides.get(setting.key, setting.default) for setting in table}


# -- parsers: each raises ValueError with the end of a sentence that starts with the name ---


def boolean(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be 1/true/yes/on or 0/false/no/off, not {raw!r}")


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, not {raw!r}") from None


def number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, not {raw!r}") from None


def text(raw: str) -> str:
    return raw


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def choice(*choices: str) -> Callable[[str], str]:
    spelled = (", ".join(choices[:-1]) + " or " + choices[-1]) if len(choices) > 1 else choices[0]

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"must be {spelled}, not {raw!r}")
        return value

    return parse
