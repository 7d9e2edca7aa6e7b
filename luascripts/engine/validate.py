"""validate(): everything load_script would refuse, reported instead of raised."""

from __future__ import annotations

from collections.abc import Collection

from luascripts.engine.compile import compile_script
from luascripts.engine.errors import ScriptLoadError
from luascripts.engine.types import Diagnostic, Limits, ValidationResult


def validate(source: str | bytes, *, backend_names: Collection[str] | None = None,
             limits: Limits = Limits()) -> ValidationResult:
    """Check a script the way loading it would; never raises for a bad script.

    On success the result carries the route table (method, full pattern, middleware count,
    target) and whether the script is a legacy selector. `backend_names`, when given, makes
    unknown literal backend names in mount() targets errors.
    """
    try:
        compiled = compile_script(source, backend_names=backend_names, limits=limits)
    except ScriptLoadError as exc:
        return ValidationResult(valid=False, errors=exc.diagnostics)
    except Exception as exc:  # a bug of ours must not read as "your script is fine"
        return ValidationResult(valid=False, errors=(
            Diagnostic(None, None, f"The script could not be checked: {exc}"),))
    try:
        routes = compiled.routes.routes if compiled.routes is not None else ()
        return ValidationResult(valid=True, routes=routes, is_selector=compiled.is_selector)
    finally:
        compiled.runtime.close()
