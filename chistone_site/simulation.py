"""Dry runs of a tenant's script: what the gateway would do with one request. No network.

The one simulation service behind the API's `simulate/`, script tests (publish, validate,
config apply) and the admin's dry-run console. It runs the script through the data plane's
own driver (`routing.script_run`) with stub effects (`routing.stubs`) and the data plane's
own pure decision (`routing.plan.decide`), so what it shows is what the gateway would do:
the same request parsing (`routing.request.parse_scope`), tenant prefix handling, backend
choice, upstream path and upstream headers. Nothing is proxied; every backend counts as
healthy unless the request lists it in `unhealthy`.

    simulate(*, tenant, request, version=None, source=None) -> SimulationResult

        tenant   a tenants.models.Tenant, or a TenantSpec (a planned, unsaved configuration)
        request  {"method": "GET", "path": "/x", "host": "...", "headers": {name: value},
                  "query": "a=1&b=2" or {"a": "1"}, "client_ip": "...", "scheme": "http",
                  "unhealthy": [backend names], "body": "...",
                  "upstream": {backend: {status, headers, body} | {error}},
                  "calls": {backend: {status, headers, body} | {error}}};
                  all optional but `path`. `upstream` stubs say what a proxied backend
                  answers, `calls` what http.request gets (routing.stubs).
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
         "logs": [[level, message], ...], "error", "warnings",
         "response": {"status", "headers", "body"} or null: the final answer the client
                     would get, after every middleware (null for a proxy without a stub),
         "calls": [{backend, method, path, query, url, status | error}],
         "exchanges": [{backend, url, method, status, error}] (responses middleware opened),
         "stopped": why the run stopped early (a middleware waited without a stub) or null}
        `error` is set when the script could not be loaded or failed at run time (the data
        plane would answer 500); `action.kind == "error"` is any gateway error answer
        (400 bad request, 404 no tenant, 500 unknown backend, 503 no enabled backend).

    run_script_tests(*, tenant, source, tests) -> list[{"name", "passed", "detail"}]

        tests    [{"name", "request": {as above}, "expect": {"status", "backend",
                  "upstream_path", "headers", "route_pattern", "kind", "params", "body",
                  "response_status", "response_headers", "response_body"}}]
                  `expect.headers` compares upstream headers for a proxy and response
                  headers otherwise (names case-insensitive, repeats joined with ", ");
                  a value of null means "must be absent"; `body` is a direct answer's
                  body, or a reject's or error's message;
                  `upstream_path` without "?" compares the path only. `response_*` compare
                  the final answer the client would get (see `response` above).
        The script is loaded once for all tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlencode

from luascripts.engine.errors import BodyUnavailable, ResponseUnavailable
from luascripts.engine.types import ExchangeAction, Outcome, RejectAction, ResponsePatch
from luascripts.middleware_names import name_labels
from routing.conf import get_conf
from routing.errors import GatewayError, error_response, reject_error
from routing.gateway import body_error, response_error
from routing.headers import downstream_headers
from routing.patch import frame_answer
from routing.plan import DirectResponse, UpstreamPlan, decide, script_request
from routing.request import ClientRequest, parse_scope
from routing.resolve import Claim, Resolver
from routing.script_run import run_script
from routing.snapshot import BackendEntry, TenantEntry, load_tenant_script, script_limits
from routing.stubs import (
    NoStub,
    Stub,
    StubEffects,
    StubError,
    parse_shared_seed,
    parse_stubs,
    run_sync,
    seeded_state,
)
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
    limits: Mapping[str, int] = field(default_factory=dict)  # the tenant's own limits


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
        limits=tenant.script_limits(),
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
    response: Mapping[str, Any] | None = None
    calls: tuple[Mapping[str, Any], ...] = ()
    exchanges: tuple[Mapping[str, Any], ...] = ()
    stopped: str | None = None

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
            "response": dict(self.response) if self.response is not None else None,
            "calls": [dict(c) for c in self.calls],
            "exchanges": [dict(e) for e in self.exchanges],
            "stopped": self.stopped,
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
    """One tenant configuration and one script, loaded once, run for many requests.

    The script is loaded with the same limits as the data plane's snapshot
    (routing.snapshot.script_limits) and run through the same driver, so a dry run or a
    script test behaves as the gateway would."""

    def __init__(self, spec: TenantSpec, source: str | None, number: int | None) -> None:
        self.spec = spec
        self.number = number
        backends = {
            b["name"]: BackendEntry.from_url(
                id=index, tenant=spec.slug, name=b["name"], url=b["url"],
                weight=int(b.get("weight", backend_defaults.WEIGHT)),
                enabled=bool(b.get("enabled", True)),
                health_check_path=b.get("health_check_path") or "",
                **_timeouts(b))
            for index, b in enumerate(spec.backends, start=1)
        }
        self.limits = script_limits(spec.limits)
        self.load_error: str | None = None
        script = None
        if source is not None:
            try:
                script = load_tenant_script(source, tenant=spec.slug, backend_names=backends,
                                            limits=self.limits)
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
        self.source = source

    def run(self, request: Mapping[str, Any]) -> SimulationResult:
        warnings: list[str] = []
        if not self.spec.active:
            warnings.append(f"Tenant {self.spec.slug!r} is inactive: the gateway answers 404.")
        if self.load_error is not None:
            return self._result(error=self.load_error, warnings=warnings,
                                action=_error_action(500, "script_error", self.load_error))
        try:
            upstream = parse_stubs(request.get("upstream"), "upstream")
            calls = parse_stubs(request.get("calls"), "calls")
            shared = parse_shared_seed(request.get("shared"), "shared")
        except StubError as exc:
            from tenants.errors import InvalidInput

            raise InvalidInput(str(exc)) from None
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

        body = request.get("body") or ""
        effects = StubEffects(
            tenant=self.entry, request=client, router_path=match.path, limits=self.limits,
            body=body.encode("utf-8") if isinstance(body, str) else bytes(body),
            upstream=upstream, calls=calls, healthy=healthy,
            state=seeded_state(self.entry.slug, shared))
        outcome: Outcome | None = None
        if self.entry.script is not None:
            sreq = script_request(self.entry, client, match.path, healthy)
            try:
                outcome = run_sync(run_script(self.entry.script, sreq, effects))
            except NoStub as stop:
                return self._stopped(stop, effects, warnings)
            except BodyUnavailable as exc:
                error = body_error(exc, self.spec.slug, self.limits.max_request_body_bytes)
                assert isinstance(error, GatewayError)
                return self._failed_run(exc, error, effects, warnings)
            except ResponseUnavailable as exc:
                return self._failed_run(
                    exc, response_error(exc, self.limits.max_response_body_bytes), effects,
                    warnings)
            except Exception as exc:  # ScriptError: the data plane answers 500
                message = f"The script failed: {getattr(exc, 'message', None) or exc}"
                return self._result(error=message, warnings=warnings,
                                    logs=_logs(getattr(exc, "logs", ())),
                                    calls=tuple(effects.made_calls),
                                    exchanges=tuple(effects.exchanges),
                                    action=_error_action(500, "script_error", message),
                                    response=_error_answer_500(client))
        return self._decide(client, match.path, outcome, healthy, warnings, effects)

    def _failed_run(self, exc: Exception, error: GatewayError, effects: StubEffects,
                    warnings: list[str]) -> SimulationResult:
        return self._result(action=_gateway_error(error), warnings=warnings,
                            logs=_logs(getattr(exc, "logs", ())),
                            calls=tuple(effects.made_calls), exchanges=tuple(effects.exchanges),
                            response=_answer_of_error(error, effects.request, None))

    def _stopped(self, stop: NoStub, effects: StubEffects,
                 warnings: list[str]) -> SimulationResult:
        plan = stop.plan
        return self._result(
            action=_plan_action(plan), warnings=warnings, calls=tuple(effects.made_calls),
            exchanges=tuple(effects.exchanges),
            stopped=(f"A middleware waited for backend {plan.backend.name!r}'s answer; give an "
                     f"`upstream` stub for {plan.backend.name!r} to see what follows."))

    def _decide(self, client: ClientRequest, router_path: str, outcome: Outcome | None,
                healthy: Any, warnings: list[str], effects: StubEffects) -> SimulationResult:
        common: dict[str, Any] = {"warnings": warnings, "calls": tuple(effects.made_calls),
                                  "exchanges": tuple(effects.exchanges)}
        patch = None
        if outcome is not None:
            patch = outcome.patch
            common.update(route_pattern=outcome.route_pattern, params=dict(outcome.params),
                          middleware=tuple(name_labels(outcome.middleware, self.source)),
                          logs=_logs(outcome.logs))
            action = outcome.action
            if isinstance(action, ExchangeAction):
                opened = effects.opened[action.exchange]
                if opened.error is not None:
                    return self._result(action=_gateway_error(opened.error), response=(
                        _answer_of_error(opened.error, client, patch)), **common)
                assert opened.plan is not None and opened.stub is not None
                return self._result(action=_plan_action(opened.plan), response=_answer_of_stub(
                    opened.stub, client, patch), **common)
            if isinstance(action, RejectAction):
                headers = [["allow", ", ".join(action.allow)]] if action.allow else []
                error = reject_error(action.status, action.message, tuple(action.allow))
                return self._result(action=_action(
                    "reject", status=action.status, message=action.message, headers=headers),
                    response=_answer_of_error(error, client, patch), **common)
        try:
            decision = decide(self.entry, client, router_path, outcome, healthy=healthy,
                              total_timeout_s=get_conf().upstream_total_timeout_s)
        except GatewayError as exc:
            return self._result(action=_gateway_error(exc),
                                response=_answer_of_error(exc, client, patch), **common)
        if isinstance(decision, UpstreamPlan):
            stub = effects.upstream.get(decision.backend.name)
            return self._result(action=_plan_action(decision), response=(
                _answer_of_stub(stub, client, patch) if stub is not None else None), **common)
        if isinstance(decision, DirectResponse):
            headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in decision.headers]
            body = decision.body.decode("utf-8", "replace")
            return self._result(action=_action("respond", status=decision.status,
                                               headers=headers, body=body),
                                response=_answer(decision.status, list(decision.headers),
                                                 decision.body, client, patch), **common)
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


def _timeouts(backend: Mapping[str, Any]) -> dict[str, int]:
    out = {}
    for key in ("connect_timeout_ms", "read_timeout_ms"):
        if backend.get(key) is not None:
            out[key] = int(backend[key])
    return out


# -- the final answer, as the client would get it --------------------------------------------


def _answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
            client: ClientRequest, patch: ResponsePatch | None) -> dict[str, Any]:
    """What routing.gateway sends for a complete answer: the patch applied, framing ours
    (routing.patch.frame_answer); a HEAD request's answer keeps its length, not its body."""
    status, out, body = frame_answer(status, headers, body, client.request_id, patch)
    if client.method == "HEAD":
        body = b""
    return {"status": status,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in out],
            "body": body.decode("utf-8", "replace")}


def _answer_of_error(error: GatewayError, client: ClientRequest,
                     patch: ResponsePatch | None) -> dict[str, Any]:
    status, headers, body = error_response(error, client.request_id)
    return _answer(status, headers, body, client, patch)


def _answer_of_stub(stub: Stub, client: ClientRequest,
                    patch: ResponsePatch | None) -> dict[str, Any]:
    if stub.error is not None:
        from routing.stubs import _stub_error

        return _answer_of_error(_stub_error(stub.error, "?"), client, patch)
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stub.headers]
    headers = downstream_headers(raw, request_id=client.request_id)
    return _answer(stub.status, headers, stub.body, client, patch)


def _error_answer_500(client: ClientRequest) -> dict[str, Any]:
    from routing.errors import ScriptFailed

    return _answer_of_error(ScriptFailed(), client, None)


def _plan_action(plan: UpstreamPlan) -> dict[str, Any]:
    upstream_path = f"{plan.path}?{plan.query}" if plan.query else plan.path
    return _action("proxy", backend=plan.backend.name,
                   fallbacks=[b.name for b in plan.fallbacks], method=plan.method,
                   upstream_path=upstream_path, upstream_url=plan.url,
                   upstream_headers=[list(h) for h in plan.headers])


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
    response = result.response
    for key in ("response_status", "response_headers", "response_body"):
        if expect.get(key) is not None and response is None:
            problems.append(f"{key}: expected {expect[key]!r}, but there is no final answer "
                            "(a proxy needs an `upstream` stub for its backend)"
                            + (f"; {result.stopped}" if result.stopped else ""))
            break
    else:
        if expect.get("response_status") is not None \
                and response["status"] != expect["response_status"]:  # type: ignore[index]
            problems.append(f"response_status: expected {expect['response_status']}, got "
                            f"{response['status']}")  # type: ignore[index]
        if expect.get("response_body") is not None \
                and response["body"] != expect["response_body"]:  # type: ignore[index]
            problems.append(f"response_body: expected {expect['response_body']!r}, got "
                            f"{response['body']!r}")  # type: ignore[index]
        if expect.get("response_headers"):
            got = _joined(response["headers"])  # type: ignore[index]
            for name, wanted in expect["response_headers"].items():
                actual = got.get(str(name).lower())
                if actual != wanted:
                    problems.append(f"response header {name}: expected {wanted!r}, got "
                                    f"{actual!r}")
    lowered = _joined(action.get("upstream_headers") if kind == "proxy"
                      else action.get("headers") or ())
    for name, wanted in (expect.get("headers") or {}).items():
        actual = lowered.get(str(name).lower())
        if actual != wanted:
            label = "upstream header" if kind == "proxy" else "header"
            problems.append(f"{label} {name}: expected {wanted!r}, got {actual!r}")
    return problems
