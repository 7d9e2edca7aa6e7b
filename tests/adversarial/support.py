"""Helpers shared by the in-process adversarial tests: real Lua, real gateway, isolation."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass

from luascripts.engine import Limits, LoadedScript, Outcome, ScriptRequest, load_script
from tests.serving import ROOT

BACKENDS = ("a", "b")


def request(path: str = "/", method: str = "GET", *, headers: Mapping[str, str] | None = None,
            query: str = "", tenant: str = "acme") -> ScriptRequest:
    return ScriptRequest(method=method, path=path, query_string=query, host="acme.example.com",
                         scheme="https", client_ip="203.0.113.9",
                         headers=dict(headers or {"user-agent": "adversary"}), tenant=tenant,
                         request_id="rid-adv")


def load(source: str, *, tenant: str = "acme", limits: Limits = Limits(),
         backends: tuple[str, ...] = BACKENDS) -> LoadedScript:
    return load_script(source, tenant=tenant, backend_names=backends, limits=limits)


def handler(body: str, *, extra: str = "") -> str:
    """A script with `body` as the handler of GET /, plus GET /ok to show it still works."""
    return (f"{extra}\n"
            "chi.get('/', function(req)\n"
            f"{body}\n"
            "end)\n"
            "chi.get('/ok', function(req) return respond(200, 'still ok') end)\n")


@dataclass
class Run:
    outcome: Outcome | None
    error: Exception | None
    seconds: float

    @property
    def body(self) -> bytes:
        assert self.outcome is not None, f"the request failed: {self.error!r}"
        return self.outcome.action.body  # type: ignore[union-attr]


def run_once(script: LoadedScript, path: str = "/", **kw) -> Run:
    started = time.perf_counter()
    try:
        outcome = script.handle(request(path, **kw))
    except Exception as exc:
        return Run(None, exc, time.perf_counter() - started)
    return Run(outcome, None, time.perf_counter() - started)


ISOLATED = """
import json, sys, time
from luascripts.engine import load_script
from luascripts.engine.types import ScriptRequest
source, path, headers, repeat = json.loads(sys.stdin.read())
script = load_script(source, tenant="iso", backend_names=["a"])
results = []
for p in [path] * repeat + ["/ok"]:
    req = ScriptRequest(method="GET", path=p, query_string="", host="iso.example",
                        scheme="http", client_ip="127.0.0.1", headers=headers, tenant="iso",
                        request_id="rid-iso")
    started = time.perf_counter()
    try:
        outcome = script.handle(req)
        results.append(["ok", getattr(outcome.action, "status", 0),
                        time.perf_counter() - started])
    except Exception as exc:
        results.append([type(exc).__name__, str(exc)[:300], time.perf_counter() - started])
print(json.dumps(results))
"""


@dataclass
class Isolated:
    """The result of running a script in a child process: what a bad script can do to the
    process it runs in (hang, abort) must not take the test run down with it."""

    hung: bool
    returncode: int | None
    results: list[list]  # [kind, status-or-message, seconds] per request, /ok last
    stderr: str


def run_isolated(source: str, path: str = "/", *, headers: Mapping[str, str] | None = None,
                 timeout: float = 4.0, repeat: int = 1) -> Isolated:
    payload = json.dumps([source, path, dict(headers or {}), repeat])
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(ISOLATED)], input=payload,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        return Isolated(True, None, [], (exc.stderr or b"").decode(errors="replace")
                        if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
    lines = done.stdout.strip().splitlines()
    results = json.loads(lines[-1]) if lines else []
    return Isolated(False, done.returncode, results, done.stderr)
