"""validate(): everything load_script would refuse, reported instead of raised."""

from __future__ import annotations

from collections.abc import Collection

from luascripts.engine import analysis
from luascripts.engine.compile import compile_script
from luascripts.engine.errors import ScriptLoadError
from luascripts.engine.types import Diagnostic, Limits, ValidationResult


def validate(source: str | bytes, *, backend_names: Collection[str] | None = None,
             limits: Limits = Limits()) -> ValidationResult:
    """Check a script the way loading it would; never raises for a bad script.

    On success the result carries the route table (method, full pattern, middleware count,
    target), whether the script is a legacy selector, and warnings (handlers that never run).
    `backend_names`, when given, makes unknown literal backend names errors: in mount()
    targets (registration sees them) and in proxy(...) and http.request(...) calls
    (luascripts.engine.analysis reads them from the source).
    """
    unknown = []
    if backend_names is not None:
        text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
        unknown = analysis.unknown_backends(text, backend_names)
    try:
        compiled = compile_script(source, backend_names=backend_names, limits=limits)
    except ScriptLoadError as exc:
        errors = sorted({*exc.diagnostics, *unknown}, key=lambda d: (d.line or 0, d.message))
        return ValidationResult(valid=False, errors=tuple(errors))
    except Exception as exc:  # a bug of ours must not read as "your script is fine"
        return ValidationResult(valid=False, errors=(
            Diagnostic(None, None, f"The script could not be checked: {exc}"),))
    try:
        routes = compiled.routes.routes if compiled.routes is not None else ()
        warnings = compiled.routes.warnings if compiled.routes is not None else ()
        if unknown:
            return ValidationResult(valid=False, errors=tuple(unknown), routes=routes,
                                    is_selector=compiled.is_selector, warnings=warnings)
        return ValidationResult(valid=True, routes=routes, is_selector=compiled.is_selector,
                                warnings=warnings)
    finally:
        compiled.runtime.close()
