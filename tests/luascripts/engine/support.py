"""Shared helpers for the engine tests: load real Lua scripts and build requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from luascripts.engine import BackendView, Limits, LoadedScript, Outcome, ScriptRequest, load_script

EXAMPLES = Path(__file__).resolve().parents[3] / "luascripts" / "examples"
BACKENDS = ("users-v1", "users-v2", "stable", "canary", "app-a", "app-b", "legacy", "a", "b",
            "hooks", "users", "billing", "api", "primary", "backup", "auth", "app", "idp")
FAST = Limits(request_cpu_ms=30, register_cpu_ms=200)


def load(source: str, *, backends: Sequence[str] | None = BACKENDS, tenant: str = "acme",
         limits: Limits = Limits()) -> LoadedScript:
    return load_script(source, tenant=tenant, backend_names=backends, limits=limits)


def request(path: str = "/", method: str = "GET", *, query: str = "",
            headers: Mapping[str, str] | None = None, host: str = "acme.example.com",
            client_ip: str = "203.0.113.9", tenant: str = "acme", request_id: str = "rid-1",
            backends: Sequence[BackendView] = ()) -> ScriptRequest:
    return ScriptRequest(method=method, path=path, query_string=query, host=host,
                         scheme="https", client_ip=client_ip,
                         headers=dict(headers or {"user-agent": "pytest"}), tenant=tenant,
                         request_id=request_id, backends=tuple(backends))


def run(source: str, path: str = "/", method: str = "GET", **kwargs: object) -> Outcome:
    """Load `source` and handle one request."""
    script = load(source)
    try:
        return script.handle(request(path, method, **kwargs))  # type: ignore[arg-type]
    finally:
        script.close()


def example(name: str) -> str:
    return (EXAMPLES / name).read_text("utf-8")
