"""The Lua engine: tenants' route scripts, sandboxed (lupa, Lua 5.4), with chi's routing.

Plain Python with no Django: the data plane, validation, the admin's dry run and the API's
simulate all use it. See docs/scripting.md for the script contract.
"""

from luascripts.engine.errors import (
    ScriptError,
    ScriptLoadError,
    ScriptMemoryError,
    ScriptRuntimeError,
    ScriptTimeoutError,
)
from luascripts.engine.script import LoadedScript, load_script
from luascripts.engine.types import (
    Action,
    BackendView,
    Diagnostic,
    Header,
    Limits,
    Outcome,
    ProxyAction,
    RejectAction,
    RespondAction,
    RouteInfo,
    ScriptRequest,
    ValidationResult,
)
from luascripts.engine.validate import validate

__all__ = [
    "Action",
    "BackendView",
    "Diagnostic",
    "Header",
    "Limits",
    "LoadedScript",
    "Outcome",
    "ProxyAction",
    "RejectAction",
    "RespondAction",
    "RouteInfo",
    "ScriptError",
    "ScriptLoadError",
    "ScriptMemoryError",
    "ScriptRequest",
    "ScriptRuntimeError",
    "ScriptTimeoutError",
    "ValidationResult",
    "load_script",
    "validate",
]
