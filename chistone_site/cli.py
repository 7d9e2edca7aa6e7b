"""`chistone`: the command line for CI pipelines, over the REST API (httpx).

    chistone lint FILE...                      compile and register locally (no server)
    chistone validate --tenant T FILE [--tests TESTS]   server-side check + tests, stores nothing
    chistone push --tenant T FILE [--activate] [--tests TESTS] [--message M]
    chistone diff --tenant T FILE [--version N] [--exit-code]   a .lua source or a config document
    chistone activate T VERSION [--skip-tests]              rolling back = an older VERSION
    chistone versions T
    chistone simulate --tenant T [--version N | --file F] [-X METHOD] PATH [--host H] [-H 'K: V']
                      [-d BODY|@FILE] [--upstream JSON|@FILE] [--calls JSON|@FILE]
    chistone dump T [-o FILE]
    chistone sync FILE [--dry-run] [--prune] [--if-match N] [--exit-code]

Configured by CHISTONE_URL (e.g. http://127.0.0.1:8001) and CHISTONE_TOKEN (an API key), or
--url/--token. Exit status: 0 success, 1 error (including failed tests and usage errors),
2 when `diff --exit-code` or `sync --dry-run --exit-code` finds changes.

`lint` imports only the Lua engine (no Django, no settings, no network).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from chistone_site.conf import client_environment

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class CliError(Exception):
    """Ends the command with exit status 1 and this message on stderr."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 on usage errors; 2 means "changes found" here.
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


# -- output --------------------------------------------------------------------------------


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_diagnostics(label: str, errors: Sequence[dict[str, Any]], *,
                      kind: str = "") -> None:
    prefix = f"{kind}: " if kind else ""
    for error in errors:
        line, column = error.get("line"), error.get("column")
        where = f"{label}:{line}:{column}" if column else f"{label}:{line}" if line else label
        err(f"{where}: {prefix}{error.get('message')}")


def print_tests(results: Sequence[dict[str, Any]]) -> None:
    for result in results:
        mark = "PASS" if result.get("passed") else "FAIL"
        out(f"  {mark} {result.get('name')}: {result.get('detail')}")


# -- the API client ------------------------------------------------------------------------


class Api:
    def __init__(self, url: str | None, token: str | None, timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url:
            raise CliError("Set CHISTONE_URL (or --url) to the control plane, e.g. "
                           "http://127.0.0.1:8001")
        if not token:
            raise CliError("Set CHISTONE_TOKEN (or --token) to an API key.")
        base = url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.client = httpx.Client(
            base_url=base + "/", timeout=timeout, transport=transport, trust_env=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "chistone-cli"},
        )

    def call(self, method: str, path: str, *, json_body: Any = None,
             params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
             ok: Sequence[int] = (200, 201, 204), label: str = "") -> httpx.Response:
        try:
            response = self.client.request(method, path, json=json_body, params=params,
                                           headers=headers)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot reach {self.client.base_url}: {exc}") from exc
        if response.status_code not in ok:
            raise CliError(self._describe(response, label))
        return response

    def _describe(self, response: httpx.Response, label: str) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:500]}"
        if not isinstance(body, dict):
            return f"HTTP {response.status_code}: {body!r}"
        if body.get("errors"):
            print_diagnostics(label or "script", body["errors"])
        if body.get("test_results"):
            print_tests(body["test_results"])
        for field, messages in (body.get("fields") or {}).items():
            err(f"  {field}: {messages}")
        request_id = body.get("request_id")
        suffix = f" (request id {request_id})" if request_id else ""
        return f"HTTP {response.status_code} {body.get('error', '')}: {body.get('detail')}{suffix}"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"Cannot read {path}: {exc}") from exc


def read_json(path: str) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from exc


def read_tests(path: str | None) -> list[dict[str, Any]]:
    if not path:
        return []
    data = read_json(path)
    if isinstance(data, dict):
        data = data.get("tests", [])
    if not isinstance(data, list):
        raise CliError(f"{path}: expected a list of tests (or {{\"tests\": [...]}}).")
    return data


def as_document(path: str) -> dict[str, Any] | None:
    """The config document in `path`, or None when it is a Lua source."""
    if path.endswith(".lua"):
        return None
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and ({"tenant", "backends", "script"} & set(data)):
        return data
    return None


# -- commands ------------------------------------------------------------------------------


def cmd_lint(args: argparse.Namespace) -> int:
    from luascripts.engine import Limits, validate

    limit = Limits().max_source_bytes
    backend_names = [b for b in (args.backends or "").split(",") if b] or None
    status = EXIT_OK
    for path in args.files:
        source = read_text(path)
        size = len(source.encode("utf-8"))
        if size > limit:
            err(f"{path}: the script is {size} bytes; the limit is {limit} bytes")
            status = EXIT_ERROR
            continue
        result = validate(source, backend_names=backend_names)
        if result.valid:
            kind = "selector script" if result.is_selector else f"{len(result.routes)} route(s)"
            out(f"{path}: ok, {kind}")
            print_diagnostics(path, [d.to_dict() for d in result.warnings], kind="warning")
            if args.verbose:
                for route in result.routes:
                    target = f"  -> {route.target}" if route.target else ""
                    out(f"  {route.method:7} {route.pattern}  (middleware: {route.middleware})"
                        f"{target}")
        else:
            print_diagnostics(path, [d.to_dict() for d in result.errors])
            status = EXIT_ERROR
    return status


def cmd_validate(args: argparse.Namespace, api: Api) -> int:
    body = {"source": read_text(args.file), "tests": read_tests(args.tests)}
    result = api.call("POST", f"tenants/{args.tenant}/scripts/validate/", json_body=body,
                      label=args.file).json()
    if not result["valid"]:
        print_diagnostics(args.file, result["errors"])
        return EXIT_ERROR
    out(f"{args.file}: valid, {len(result['routes'])} route(s)")
    print_diagnostics(args.file, result.get("warnings") or [], kind="warning")
    print_tests(result["tests"])
    return EXIT_ERROR if any(not t["passed"] for t in result["tests"]) else EXIT_OK


def cmd_push(args: argparse.Namespace, api: Api) -> int:
    body = {"source": read_text(args.file), "message": args.message or "",
            "activate": args.activate, "tests": read_tests(args.tests)}
    response = api.call("POST", f"tenants/{args.tenant}/scripts/", json_body=body,
                        label=args.file)
    version = response.json()
    state = "published" if response.status_code == 201 else "unchanged, already"
    out(f"{args.tenant}: {state} v{version['version']} (sha256 {version['sha256'][:12]})"
        + (", active" if version["active"] else ""))
    print_tests(version.get("test_results") or [])
    if any(not t["passed"] for t in version.get("test_results") or []):
        err("Some script tests failed; the version is stored but was not activated.")
        return EXIT_ERROR
    return EXIT_OK


def _active_source(api: Api, tenant: str, number: int | None) -> tuple[str, str]:
    if number is None:
        number = api.call("GET", f"tenants/{tenant}/").json().get("active_version")
    if not number:
        return "", f"{tenant}/(no active version)"
    version = api.call("GET", f"tenants/{tenant}/scripts/{number}/").json()
    return version["source"], f"{tenant}/v{number}"


def _print_plan(plan: dict[str, Any]) -> None:
    for title, sign in (("created", "+"), ("updated", "~"), ("deleted", "-")):
        for change in plan.get(title, []):
            fields = change.get("fields") or {}
            detail = ", ".join(f"{k}: {json.dumps(v[0])} -> {json.dumps(v[1])}"
                               for k, v in fields.items())
            out(f"{sign} {change['kind']} {change['name']}" + (f" ({detail})" if detail else ""))
    print_tests(plan.get("test_results") or [])


def cmd_diff(args: argparse.Namespace, api: Api) -> int:
    document = as_document(args.file)
    if document is not None:
        plan = api.call("POST", f"tenants/{args.tenant}/config/", json_body={
            "document": document, "dry_run": True, "prune": args.prune}).json()
        _print_plan(plan)
        changed = plan["changed"]
    else:
        old, label = _active_source(api, args.tenant, args.version)
        new = read_text(args.file)
        lines = list(difflib.unified_diff(old.splitlines(keepends=True),
                                          new.splitlines(keepends=True),
                                          fromfile=label, tofile=args.file))
        for line in lines:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
        changed = bool(lines)
    if not changed:
        out("No changes.")
    return EXIT_CHANGES if changed and args.exit_code else EXIT_OK


def cmd_activate(args: argparse.Namespace, api: Api) -> int:
    result = api.call("POST", f"tenants/{args.tenant}/scripts/{args.version}/activate/",
                      json_body={"run_tests": not args.skip_tests}).json()
    print_tests(result.get("test_results") or [])
    out(f"{args.tenant}: v{result['version']} is active")
    return EXIT_OK


def cmd_versions(args: argparse.Namespace, api: Api) -> int:
    for version in api.call("GET", f"tenants/{args.tenant}/scripts/").json():
        flag = "*" if version["active"] else " " if version["valid"] else "!"
        out(f"{flag} v{version['version']:<4} {version['created_at'][:19]}  {version['author']}"
            f"  {version['message']}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, api: Api) -> int:
    headers: dict[str, str] = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise CliError(f"Header {item!r}: write it as 'Name: value'.")
        headers[name.strip()] = value.strip()
    path, _, query = args.path.partition("?")
    body: dict[str, Any] = {"method": args.method, "path": path, "headers": headers,
                            "query": query}
    if args.host:
        body["host"] = args.host
    if args.version:
        body["version"] = args.version
    if args.file:
        body["source"] = read_text(args.file)
    if args.data is not None:
        body["body"] = read_text(args.data[1:]) if args.data.startswith("@") else args.data
    for key in ("upstream", "calls"):
        value = getattr(args, key)
        if value:
            text = read_text(value[1:]) if value.startswith("@") else value
            try:
                body[key] = json.loads(text)
            except ValueError as exc:
                raise CliError(f"--{key}: not valid JSON ({exc}).") from None
    result = api.call("POST", f"tenants/{args.tenant}/simulate/", json_body=body).json()
    if args.json:
        out(json.dumps(result, indent=2))
        return EXIT_OK
    action = result.get("action") or {}
    out(f"route: {result.get('route_pattern') or '(none)'}  params: "
        f"{json.dumps(result.get('params') or {})}")
    if result.get("middleware"):
        out(f"middleware: {' -> '.join(result['middleware'])}")
    kind = action.get("kind")
    if kind == "proxy":
        out(f"proxy -> {action['backend']}: {action.get('method')} {action['upstream_url']}")
        for name, value in action.get("upstream_headers") or []:
            out(f"  {name}: {value}")
    elif kind == "respond":
        out(f"respond {action['status']}")
        for name, value in action.get("headers") or []:
            out(f"  {name}: {value}")
        out(action.get("body") or "")
    else:
        out(f"{kind} {action.get('status')}: {action.get('message')}")
    for call in result.get("calls") or []:
        outcome = call.get("error") or call.get("status")
        out(f"call {call['backend']}: {call['method']} {call['path']} -> {outcome}")
    if result.get("stopped"):
        out(f"stopped: {result['stopped']}")
    answer = result.get("response")
    if answer and kind == "proxy" or answer and result.get("exchanges"):
        out(f"answer {answer['status']}")
        for name, value in answer.get("headers") or []:
            out(f"  {name}: {value}")
        out(answer.get("body") or "")
    for level, message in result.get("logs") or []:
        out(f"log {level}: {message}")
    if result.get("error"):
        err(result["error"])
        return EXIT_ERROR
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, api: Api) -> int:
    document = api.call("GET", f"tenants/{args.tenant}/config/").json()
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        err(f"Wrote {args.output} (config version {document.get('config_version')}).")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, api: Api) -> int:
    document = read_json(args.file)
    if not isinstance(document, dict):
        raise CliError(f"{args.file}: a config document is a JSON object.")
    slug = args.tenant or (document.get("tenant") or {}).get("slug")
    if not slug:
        raise CliError("Name the tenant: tenant.slug in the document, or --tenant.")
    headers = {"If-Match": f'"{args.if_match}"'} if args.if_match is not None else None
    response = api.call("POST", f"tenants/{slug}/config/", headers=headers, json_body={
        "document": document, "dry_run": args.dry_run, "prune": args.prune}, ok=(200, 404))
    if response.status_code == 404:
        doc_tenant = dict(document.get("tenant") or {})
        if "name" not in doc_tenant:
            raise CliError(f"Tenant {slug!r} does not exist (or this key cannot reach it); "
                           "give tenant.name in the document to create it.")
        if args.dry_run:
            out(f"+ tenant {slug}")
            return EXIT_CHANGES if args.exit_code else EXIT_OK
        api.call("POST", "tenants/", json_body={**doc_tenant, "slug": slug})
        out(f"+ tenant {slug}")
        response = api.call("POST", f"tenants/{slug}/config/", json_body={
            "document": document, "dry_run": False, "prune": args.prune})
    plan = response.json()
    _print_plan(plan)
    if not plan["changed"]:
        out("No changes.")
    elif not args.dry_run:
        out(f"{slug}: applied, config version {plan['config_version']}")
    return EXIT_CHANGES if plan["changed"] and args.dry_run and args.exit_code else EXIT_OK


# -- wiring --------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog="chistone", description="chistone control-plane CLI for CI.")
    environment = client_environment()
    parser.add_argument("--url", default=environment.url,
                        help="Control-plane URL (env CHISTONE_URL).")
    parser.add_argument("--token", default=environment.token,
                        help="API key (env CHISTONE_TOKEN).")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds per request.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("lint", help="Compile and register scripts locally.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--backends", help="Comma-separated backend names to check against.")
    p.add_argument("-v", "--verbose", action="store_true", help="Print the route table.")

    p = sub.add_parser("validate", help="Validate a script and run tests on the server.")
    p.add_argument("--tenant", required=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--tests", metavar="TESTS_JSON")

    p = sub.add_parser("push", help="Publish a script version (idempotent).")
    p.add_argument("--tenant", required=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--activate", action="store_true", help="Activate it if its tests pass.")
    p.add_argument("--tests", metavar="TESTS_JSON")
    p.add_argument("--message", "-m")

    p = sub.add_parser("diff", help="Diff a script or a config document against the server.")
    p.add_argument("--tenant", required=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--version", type=int, help="Compare a script with this version "
                                               "(default: the active one).")
    p.add_argument("--prune", action="store_true", help="Config documents: plan deletions.")
    p.add_argument("--exit-code", action="store_true", help="Exit 2 when there are changes.")

    p = sub.add_parser("activate", help="Activate (or roll back to) a version.")
    p.add_argument("tenant")
    p.add_argument("version", type=int)
    p.add_argument("--skip-tests", action="store_true",
                   help="Do not run the version's stored tests first.")

    p = sub.add_parser("versions", help="List a tenant's script versions.")
    p.add_argument("tenant")

    p = sub.add_parser("simulate", help="Dry-run one request (nothing is proxied).")
    p.add_argument("--tenant", required=True)
    p.add_argument("path", metavar="PATH", help="Path as the client sends it, ?query allowed.")
    p.add_argument("-X", "--method", default="GET")
    p.add_argument("--host")
    p.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--version", type=int)
    source.add_argument("--file", help="An unsaved script to run instead.")
    p.add_argument("-d", "--data", metavar="BODY|@FILE", help="The request body.")
    p.add_argument("--upstream", metavar="JSON|@FILE", help=(
        'Stubs: what proxied backends answer, {"name": {"status": 200, "headers": {...}, '
        '"body": "..."}} (or {"error": "refused"|"timeout"|"broken"}).'))
    p.add_argument("--calls", metavar="JSON|@FILE",
                   help="Stubs of the same shape: what http.request(name, ...) gets.")
    p.add_argument("--json", action="store_true", help="Print the raw result.")

    p = sub.add_parser("dump", help="Print a tenant's config document.")
    p.add_argument("tenant")
    p.add_argument("-o", "--output", metavar="FILE")

    p = sub.add_parser("sync", help="Apply a config document (plan it with --dry-run).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--tenant", help="Default: tenant.slug in the document.")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--prune", action="store_true",
                   help="Delete backends the document does not list.")
    p.add_argument("--if-match", type=int, metavar="CONFIG_VERSION",
                   help="Refuse (412) if the tenant changed since this config version.")
    p.add_argument("--exit-code", action="store_true",
                   help="With --dry-run: exit 2 when there are changes.")
    return parser


COMMANDS = {
    "validate": cmd_validate, "push": cmd_push, "diff": cmd_diff, "activate": cmd_activate,
    "versions": cmd_versions, "simulate": cmd_simulate, "dump": cmd_dump, "sync": cmd_sync,
}


def main(argv: Sequence[str] | None = None, *,
         transport: httpx.BaseTransport | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "lint":
            return cmd_lint(args)
        api = Api(args.url, args.token, args.timeout, transport=transport)
        return COMMANDS[args.command](args, api)
    except CliError as exc:
        err(f"chistone: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
