"""Fast constructors for the frozen result types on the per-request path.

types.py's dataclasses are `frozen=True, slots=True`; their generated __init__ assigns each
field through object.__setattr__ and costs about 1.6 us for a 7-field class -- a tenth of the
whole per-request budget. `fast_constructor` builds an equivalent function that creates the
instance and fills its slots through the slot descriptors directly. The result is the same
object (same class, same fields, still frozen: __setattr__ keeps refusing writes); tests
check it equals what the dataclass constructor makes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A function taking the same arguments as `cls(...)` (defaults included)."""
    if hasattr(cls, "__post_init__") or not hasattr(cls, "__slots__"):
        return cls
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_MISSING": _MISSING}
    params, body = [], ["    o = _new(_cls)"]
    for i, f in enumerate(dataclasses.fields(cls)):
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"    if {f.name} is _MISSING: {f.name} = _factory{i}()")
        else:
            params.append(f.name)
        body.append(f"    _set{i}(o, {f.name})")
    source = f"def build({', '.join(params)}):\n" + "\n".join(body) + "\n    return o\n"
    exec(source, namespace)  # generated from the dataclass's own field names only
    return namespace["build"]


class _Missing:
    __slots__ = ()


_MISSING = _Missing()
