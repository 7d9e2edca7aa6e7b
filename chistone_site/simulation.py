"""Dry runs of a tenant's script: what the gateway would do with one request. No network.

The one simulation service behind the API's `simulate/`, script tests (publish, validate,
config apply) and the admin's dry-run console. It runs the real engine and the data plane's
own pure decision (`routing.plan.decide`), so what it shows is what the gateway would do:
the same request parsing (`routing.request.parse_scope`), tenant prefix handling, backend
choice, upstream path and upstream headers. Nothing is proxied; every backend counts as
healthy unless the request lists it in `unhealthy`.

    simulate(*, tenant, request, version=None, source=None) -> SimulationResult

        tenant   a tenants.models.Tenant, or a TenantSpec (a planned, unsaved configuration)
        request  {"method": "GET", "path": "/x", "host": "...", "headers": {name: value},
                  "query": "a=1&b=2" or {"a": "1"}, "client_ip": "...", "scheme": "http",
                  "unhealthy": [backend names]}; all optional but `path`.
                  `path` is the path as the client sends it, the tenant's prefix included;
                  `host` defaults to the tenant's first domain.
        version  a version number (or ScriptVersion) of this tenant; NotFound if it has none
        source   unsaved Lua source instead (the admin's editor); checked for size first
        neither  the tenant's active version; no active version = its default backend pool

    SimulationResult.to_dict() ->
        {"tenant", "version", "route_pattern", "params", "middleware", "logs",
         "action": {"kind": "proxy"|"respond"|"reject"|"error", "status", "backend",
                    "fallbacks", "method", "upstream_path", "upstream_url",
                    "upstream_headers": [[name, value], ...] (as sent, in order),
                    "headers": [[name, value], ...] (a direct answer's), "body",
                    "message" (a reject's or error's text), "error" (the error code)},
         "logs": [[level, message], ...], "error", "warnings"}
        `error` is set when the script could not be loaded or failed at run time (the data
        plane would answer 500); `action.kind == "error"` is any gateway error answer
        (400 bad request, 404 no tenant, 500 unknown backend, 503 no enabled backend).

    run_script_tests(*, tenant, source, tests) -> list[{"name", "passed", "detail"}]

        tests    [{"name", "request": {as above}, "expect": {"status", "backend",
                  "upstream_path", "headers", "route_pattern", "kind", "params", "body"}}]
                  `expect.headers` compares upstream headers for a proxy and response
                  headers otherwise (names case-insensitive, repeats joined with ", ");
                  a value of null means "must be absent"; `body` is a direct answer's
                  body, or a reject's or error's message;
                  `upstream_path` without "?" compares the path only.
        The script is loaded once for all tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlencode

from luascripts.engine.types import Outcome, RejectAction
from routing.conf import get_conf
from routing.errors import GatewayError
from routing.plan import DirectResponse, UpstreamPlan, decide, script_request
from routing.request import parse_scope
from routing.resolve import Claim, Resolver
from routing.snapshot import BackendEntry, TenantEntry
from tenants import backend_defaults

__all__ = ["SimulationResult", "TenantSpec", "simulate", "run_script_tests", "spec_for"]


@dataclass(frozen=True)
class TenantSpec:
    """A tenant as the simulation needs it: from the database or from a planned document."""

    slug: str
    path_prefix: str = ""
    domains: tuple[str, ...] = ()
    active: bool = True
    backends: tuple[Mapping[str, Any], ...] = ()  # {name, url, weight, enabled, ...}
    active_source: str | None = None
    active_version: int | None = None
    id: int = 0


def spec_for(tenant: Any) -> TenantSpec:
    """The TenantSpec of a saved tenant (its backends and active version)."""
    if isinstance(tenant, TenantSpec):
        return tenant
    from tenants.models import Backend

    version = tenant.active_version
    backends = tuple(
        Backend.objects.filter(tenant=tenant).order_by("name").values(
            "name", "url", "weight", "enabled", "health_check_path",
            "connect_timeout_ms", "read_timeout_ms")
    )
    return TenantSpec(
        slug=tenant.slug, path_prefix=tenant.path_prefix, domains=tuple(tenant.domains or ()),
        active=tenant.active, backends=backends,
        active_source=version.source if version is not None else None,
        active_version=version.number if version is not None else None, id=tenant.pk or 0,
    )


@dataclass(frozen=True)
class SimulationResult:
    tenant: str
    version: int | None
    route_pattern: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    middleware: tuple[str, ...] = ()
    action: Mapping[str, Any] | None = None
    logs: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "version": self.version,
            "route_pattern": self.route_pattern,
            "params": dict(self.params),
            "middleware": list(self.middleware),
            "action": dict(self.action) if self.action is not None else None,
            "logs": [[level, message] for level, message in self.logs],
            "error": self.error,
            "warnings": list(self.warnings),
        }


# -- public entry points -------------------------------------------------------------------


def simulate(
    *,
    tenant: Any,
    request: Mapping[str, Any],
    version: Any = None,
    source: str | None = None,
) -> SimulationResult:
    spec = spec_for(tenant)
    if source is not None:
        from luascripts.services import check_source

        source, number = check_source(source), None
    elif version is not None:
        if isinstance(version, int):
            from luascripts.services import get_version

            version = get_version(tenant=tenant, number=version)
        if version.tenant_id != spec.id:
            from tenants.errors import NotFound

            raise NotFound(f"Tenant {spec.slug!r} has no script version {version.number}.")
        source, number = version.source, version.number
    else:
        source, number = spec.active_source, spec.active_version
    runner = _Runner(spec, source, number)
    return runner.run(request)


def run_script_tests(
    *,
    tenant: Any,
    source: str,
    tests: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    runner = _Runner(spec_for(tenant), source, None)
    results = []
    for index, test in enumerate(tests):
        name = str(test.get("name") or f"test {index + 1}")
        result = runner.run(test.get("request") or {})
        problems = compare(result, test.get("expect") or {})
        results.append({"name": name, "passed": not problems,
                        "detail": "; ".join(problems) if problems else describe(result)})
    return results


# -- the run -------------------------------------------------------------------------------


class _Runner:
    """One tenant configuration and one script, loaded once, run for many requests."""

    def __init__(self, spec: TenantSpec, source: str | None, number: int | None) -> None:
        self.spec = spec
        self.number = number
        backends = {
            b["name"]: BackendEntry.from_url(
                id=index, tenant=spec.slug, name=b["name"], url=b["url"],
                weight=int(b.get("weight", backend_defaults.WEIGHT)),
                enabled=bool(b.get("enabled", True)),
                health_check_path=b.get("health_check_path") or "",
                connect_timeout_ms=int(b.get("connect_timeout_ms",
                                             backend_defaults.CONNECT_TIMEOUT_MS)),
                read_timeout_ms=int(b.get("read_timeout_ms", backend_defaults.READ_TIMEOUT_MS)))
            for index, b in enumerate(spec.backends, start=1)
        }
        self.load_error: str | None = None
        script = None
        if source is not None:
            from luascripts.engine import load_script

            try:
                script = load_script(source, tenant=spec.slug, backend_names=sorted(backends))
            except Exception as exc:  # ScriptLoadError, or anything the engine raised
                self.load_error = str(exc) or f"The script could not be loaded ({exc!r})."
        self.entry = TenantEntry(
            id=spec.id, slug=spec.slug, name=spec.slug, prefix=spec.path_prefix,
            domains=tuple(spec.domains), backends=MappingProxyType(backends),
            default_pool=tuple(b for b in backends.values() if b.enabled and b.weight > 0),
            script=script, version_number=number,
            is_selector=bool(getattr(script, "is_selector", False)),
        )
        self.resolver = Resolver.compile(
            Claim(host, spec.path_prefix, self.entry) for host in (spec.domains or ("",)))
        self.has_source = source is not None

    def run(self, request: Mapping[str, Any]) -> SimulationResult:
        warnings: list[str] = []
        if not self.spec.active:
            warnings.append(f"Tenant {self.spec.slug!r} is inactive: the gateway answers 404.")
        if self.load_error is not None:
            return self._result(error=self.load_error, warnings=warnings,
                                action=_error_action(500, "script_error", self.load_error))
        try:
            client = parse_scope(_scope(request, self._default_host()), get_conf())
        except GatewayError as exc:
            return self._result(action=_gateway_error(exc), warnings=warnings)
        match = self.resolver.resolve(client.host, client.raw_path)
        if match is None:
            detail = (f"Host {client.host!r} with path {client.raw_path!r} does not reach tenant "
                      f"{self.spec.slug!r} (domains: {', '.join(self.spec.domains) or 'any'}; "
                      f"prefix: {self.spec.path_prefix or '/'}).")
            return self._result(action=_error_action(404, "no_tenant", detail),
                                warnings=warnings)
        unhealthy = set(request.get("unhealthy") or ())

        def healthy(backend: BackendEntry) -> bool:
            return backend.name not in unhealthy

        outcome: Outcome | None = None
        if self.entry.script is not None:
            sreq = script_request(self.entry, client, match.path, healthy)
            try:
                outcome = self.entry.script.handle(sreq)
            except Exception as exc:  # ScriptError: the data plane answers 500
                message = f"The script failed: {getattr(exc, 'message', None) or exc}"
                return self._result(error=message, warnings=warnings,
                                    logs=_logs(getattr(exc, "logs", ())),
                                    action=_error_action(500, "script_error", message))
        return self._decide(client, match.path, outcome, healthy, warnings)

    def _decide(self, client, router_path: str, outcome: Outcome | None, healthy,
                warnings: list[str]) -> SimulationResult:
        common: dict[str, Any] = {"warnings": warnings}
        if outcome is not None:
            common.update(route_pattern=outcome.route_pattern, params=dict(outcome.params),
                          middleware=tuple(outcome.middleware), logs=_logs(outcome.logs))
            if isinstance(outcome.action, RejectAction):
                action = outcome.action
                headers = [["allow", ", ".join(action.allow)]] if action.allow else []
                return self._result(action=_action(
                    "reject", status=action.status, message=action.message, headers=headers),
                    **common)
        try:
            decision = decide(self.entry, client, router_path, outcome, healthy=healthy,
                              total_timeout_s=get_conf().upstream_total_timeout_s)
        except GatewayError as exc:
            return self._result(action=_gateway_error(exc), **common)
        if isinstance(decision, UpstreamPlan):
            upstream_path = f"{decision.path}?{decision.query}" if decision.query \
                else decision.path
            return self._result(action=_action(
                "proxy", backend=decision.backend.name,
                fallbacks=[b.name for b in decision.fallbacks], method=decision.method,
                upstream_path=upstream_path, upstream_url=decision.url,
                upstream_headers=[list(h) for h in decision.headers]), **common)
        if isinstance(decision, DirectResponse):
            headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in decision.headers]
            body = decision.body.decode("utf-8", "replace")
            return self._result(action=_action("respond", status=decision.status,
                                               headers=headers, body=body), **common)
        raise TypeError(f"unexpected decision {decision!r}")  # pragma: no cover

    def _default_host(self) -> str:
        for domain in self.spec.domains:
            if not domain.startswith("*."):
                return domain
        for domain in self.spec.domains:
            return "www" + domain[1:]
        return "localhost"

    def _result(self, **kwargs: Any) -> SimulationResult:
        kwargs["warnings"] = tuple(kwargs.get("warnings", ()))
        return SimulationResult(tenant=self.spec.slug, version=self.number, **kwargs)


def _scope(request: Mapping[str, Any], default_host: str) -> dict[str, Any]:
    """An ASGI http scope for `request`, so the data plane's own parser checks it."""
    method = str(request.get("method") or "GET")
    path = str(request.get("path") or "/")
    query = request.get("query") or ""
    if isinstance(query, Mapping):
        query = urlencode([(str(k), str(v)) for k, v in query.items()])
    query = str(query).lstrip("?")
    if "?" in path and not query:
        path, query = path.split("?", 1)
    headers: list[tuple[bytes, bytes]] = []
    raw_headers = request.get("headers") or {}
    items: Iterable[tuple[Any, Any]] = (
        raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers)
    has_host = False
    for name, value in items:
        lower = str(name).lower()
        if lower == "host":
            has_host = True
        headers.append((lower.encode("latin-1", "replace"),
                        str(value).encode("latin-1", "replace")))
    if not has_host:
        host = str(request.get("host") or default_host)
        headers.insert(0, (b"host", host.encode("latin-1", "replace")))
    client_ip = str(request.get("client_ip") or "127.0.0.1")
    return {
        "type": "http", "method": method, "scheme": str(request.get("scheme") or "http"),
        "path": unquote(path), "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"), "headers": headers,
        "client": (client_ip, 0),
    }


def _action(kind: str, **values: Any) -> dict[str, Any]:
    action: dict[str, Any] = {
        "kind": kind, "status": None, "backend": None, "fallbacks": [], "method": None,
        "upstream_path": None, "upstream_url": None, "upstream_headers": [], "headers": [],
        "body": None, "message": None, "error": None,
    }
    action.update(values)
    return action


def _error_action(status: int, code: str, detail: str) -> dict[str, Any]:
    return _action("error", status=status, error=code, message=detail)


def _gateway_error(exc: GatewayError) -> dict[str, Any]:
    return _action("error", status=exc.status, error=exc.code, message=exc.detail,
                   headers=[list(h) for h in exc.headers])


def _joined(pairs: Iterable[Sequence[str]]) -> dict[str, str]:
    """Lower-case name -> value, repeated headers joined with ", "."""
    out: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _logs(lines: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for line in lines or ():
        if isinstance(line, (tuple, list)) and len(line) == 2:
            out.append((str(line[0]), str(line[1])))
        else:
            out.append(("info", str(line)))
    return tuple(out)


# -- script tests --------------------------------------------------------------------------


def describe(result: SimulationResult) -> str:
    """One line for a person: what happened to the request."""
    action = result.action or {}
    kind = action.get("kind")
    where = f" via {result.route_pattern}" if result.route_pattern else ""
    if kind == "proxy":
        return f"proxied to {action['backend']} at {action['upstream_path']}{where}"
    if kind in ("respond", "reject"):
        return f"{kind} {action['status']}{where}"
    return f"error {action.get('status')} ({action.get('error')}): {action.get('message')}"


def compare(result: SimulationResult, expect: Mapping[str, Any]) -> list[str]:
    """The ways `result` differs from `expect`; empty when the test passes."""
    action = result.action or {}
    kind = action.get("kind")
    problems: list[str] = []
    if result.error:
        problems.append(result.error)
    if "kind" in expect and expect["kind"] != kind:
        problems.append(f"kind: expected {expect['kind']}, got {kind} ({describe(result)})")
    if expect.get("status") is not None:
        if kind == "proxy":
            problems.append(f"status: expected {expect['status']}, but the request is proxied "
                            f"to {action.get('backend')}")
        elif action.get("status") != expect["status"]:
            problems.append(f"status: expected {expect['status']}, got {action.get('status')} "
                            f"({describe(result)})")
    if expect.get("backend") is not None and action.get("backend") != expect["backend"]:
        problems.append(f"backend: expected {expect['backend']}, got "
                        f"{action.get('backend') or 'none'} ({describe(result)})")
    if expect.get("upstream_path") is not None:
        wanted = str(expect["upstream_path"])
        actual = action.get("upstream_path")
        if actual is not None and "?" not in wanted:
            actual = actual.split("?", 1)[0]
        if actual != wanted:
            problems.append(f"upstream_path: expected {wanted}, got {actual}")
    if "route_pattern" in expect and expect["route_pattern"] != result.route_pattern:
        problems.append(f"route_pattern: expected {expect['route_pattern']}, got "
                        f"{result.route_pattern}")
    for name, wanted in (expect.get("params") or {}).items():
        if result.params.get(name) != wanted:
            problems.append(f"params.{name}: expected {wanted!r}, got {result.params.get(name)!r}")
    body = action.get("body") if kind == "respond" else action.get("message")
    if expect.get("body") is not None and body != expect["body"]:
        problems.append(f"body: expected {expect['body']!r}, got {body!r}")
    lowered = _joined(action.get("upstream_headers") if kind == "proxy"
                      else action.get("headers") or ())
    for name, wanted in (expect.get("headers") or {}).items():
        actual = lowered.get(str(name).lower())
        if actual != wanted:
            label = "upstream header" if kind == "proxy" else "header"
            problems.append(f"{label} {name}: expected {wanted!r}, got {actual!r}")
    return problems
