"""The `chistone` CLI against a running server (and `lint` with no server and no Django)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from chistone_site.cli import main

from .conftest import ROOT

SCRIPT = """\
chi.get("/hello", function(req)
  return respond(200, "hello from " .. req.tenant, {["content-type"] = "text/plain"})
end)

chi.get("/api/{rest:.*}", function(req)
  return proxy("app", {path = "/" .. req.params.rest})
end)
"""

TESTS = [
    {"name": "hello", "request": {"path": "/hello"}, "expect": {"status": 200}},
    {"name": "api", "request": {"path": "/api/items"},
     "expect": {"backend": "app", "upstream_path": "/items"}},
]

# A middleware that waits for an auth call and looks at the proxied answer.
EXCHANGE = """\
chi.use(function(req, next)
  local who = http.request("app", {path = "/whoami"})
  if not who then return reject(503, "no auth") end
  req.headers["x-user"] = who.body
  local res = next(req)
  res.headers["x-seen"] = tostring(res.status)
  return res
end)
chi.post("/echo", function(req) return proxy("app", {body = req.body():upper()}) end)
"""

DOCUMENT = {
    "tenant": {"slug": "shop", "name": "Shop", "domains": ["shop.example"]},
    "backends": [{"name": "app", "url": "http://127.0.0.1:9"}],
}


def chistone(server, *args, token=None, capsys=None):
    """Run the CLI in this process against the server; returns (exit status, out, err)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHISTONE_URL", server.url)
        mp.setenv("CHISTONE_TOKEN", token or server.token)
        status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in {
        "script.lua": SCRIPT,
        "changed.lua": SCRIPT.replace("hello from", "greetings from"),
        "broken.lua": 'chi.get("/x", function(req)\n  return respond(200, "x"\nend)\n',
        "exchange.lua": EXCHANGE,
        "upstream.json": json.dumps({"app": {"status": 201, "body": "made"}}),
        "tests.json": json.dumps(TESTS),
        "failing.json": json.dumps([{"name": "wrong", "request": {"path": "/hello"},
                                     "expect": {"status": 418}}]),
        "shop.json": json.dumps(DOCUMENT),
        "shop2.json": json.dumps({**DOCUMENT, "backends": DOCUMENT["backends"] + [
            {"name": "extra", "url": "http://127.0.0.1:10"}]}),
    }.items():
        path = tmp_path / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


def test_lint_runs_locally_without_django(files, tmp_path):
    big = tmp_path / "big.lua"
    big.write_text("-- " + "x" * (256 * 1024))
    code = (
        "import sys\n"
        "from chistone_site.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "assert 'django' not in sys.modules, 'lint imported Django'\n"
        "sys.exit(status)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}

    def lint(*paths):
        return subprocess.run([sys.executable, "-c", code, "lint", "-v", *paths], env=env,
                              capture_output=True, text=True, timeout=60)

    ok = lint(files["script.lua"])
    assert ok.returncode == 0, ok.stderr
    assert "ok, 2 route(s)" in ok.stdout and "/api/{rest:.*}" in ok.stdout
    bad = lint(files["script.lua"], files["broken.lua"], str(big))
    assert bad.returncode == 1
    assert f"{files['broken.lua']}:" in bad.stderr and "limit is 262144 bytes" in bad.stderr


def test_the_ci_flow_against_a_running_server(server, files, capsys):
    def run(*args, **kwargs):
        return chistone(server, *args, capsys=capsys, **kwargs)

    # sync creates the tenant from the document, then applies it; a second sync is a no-op.
    status, out, _ = run("sync", files["shop.json"])
    assert status == 0 and "+ tenant shop" in out and "+ backend app" in out
    assert run("sync", files["shop.json"], "--dry-run", "--exit-code")[:2] == (0, "No changes.\n")
    status, out, _ = run("sync", files["shop2.json"], "--dry-run", "--exit-code")
    assert status == 2 and "+ backend extra" in out

    # push with tests and activate, idempotently.
    status, out, err = run("push", "--tenant", "shop", files["script.lua"], "--tests",
                           files["tests.json"], "--activate", "-m", "first")
    assert status == 0, err
    assert "published v1" in out and "active" in out and out.count("PASS") == 2
    status, out, _ = run("push", "--tenant", "shop", files["script.lua"])
    assert status == 0 and "unchanged, already v1" in out

    # diff against the active version.
    assert run("diff", "--tenant", "shop", files["script.lua"], "--exit-code")[0] == 0
    status, out, _ = run("diff", "--tenant", "shop", files["changed.lua"], "--exit-code")
    assert status == 2 and "-  return respond(200, \"hello from \"" in out
    assert "+  return respond(200, \"greetings from \"" in out
    assert run("diff", "--tenant", "shop", files["changed.lua"])[0] == 0

    # failing tests: stored, not activated, exit 1.
    status, out, err = run("push", "--tenant", "shop", files["changed.lua"], "--tests",
                           files["failing.json"], "--activate")
    assert status == 1 and "FAIL wrong" in out and "HTTP 422" in err
    status, out, _ = run("versions", "shop")
    assert status == 0 and out.splitlines()[0].startswith("  v2")
    assert out.splitlines()[1].startswith("* v1")

    # The gateway serves the active version.
    assert_served(server, "hello from shop")

    # activate v2: its stored test fails, so it is refused, and overriding needs a key with
    # the override scope and a reason (audited); then roll back to v1.
    status, out, err = run("activate", "shop", "2")
    assert status == 1 and "FAIL wrong" in out and "HTTP 422" in err
    status, _, err = run("activate", "shop", "2", "--override-tests", "--reason", "hotfix")
    assert status == 1 and "HTTP 403" in err and "override scope" in err
    status, _, err = run("activate", "shop", "2", "--override-tests", "--reason", "hotfix",
                         token=server.override_token)
    assert status == 0 and "overridden failing tests: wrong" in err
    assert_served(server, "greetings from shop")
    status, out, _ = run("activate", "shop", "1")
    assert status == 0 and "v1 is active" in out
    assert_served(server, "hello from shop")

    # simulate, dump.
    status, out, _ = run("simulate", "--tenant", "shop", "/api/items?x=1")
    assert status == 0 and "proxy -> app: GET http://127.0.0.1:9/items?x=1" in out
    status, out, _ = run("simulate", "--tenant", "shop", "/hello", "--json")
    assert json.loads(out)["action"]["body"] == "hello from shop"
    # simulate an unsaved script that waits, against stubs given inline and from a file.
    status, out, _ = run("simulate", "--tenant", "shop", "--file", files["exchange.lua"],
                         "-X", "POST", "/echo", "-d", "hi", "--calls",
                         '{"app": {"status": 200, "body": "alice"}}',
                         "--upstream", "@" + files["upstream.json"])
    assert status == 0, out
    assert "call app: GET /whoami -> 200" in out and "  x-user: alice" in out
    assert "answer 201" in out and "  x-seen: 201" in out and "made" in out
    status, out, _ = run("simulate", "--tenant", "shop", "--file", files["exchange.lua"],
                         "-X", "POST", "/echo", "--calls", '{"app": {"status": 200}}')
    assert status == 0 and "stopped: A middleware waited for backend 'app'" in out
    status, _, err = run("simulate", "--tenant", "shop", "/echo", "--calls", "{nope")
    assert status != 0 and "--calls: not valid JSON" in err
    status, out, _ = run("dump", "shop")
    dumped = json.loads(out)
    assert dumped["script"]["version"] == 1 and dumped["backends"][0]["name"] == "app"

    # validate on the server: invalid scripts report line numbers.
    status, _, err = run("validate", "--tenant", "shop", files["broken.lua"])
    assert status == 1 and f"{files['broken.lua']}:" in err


def assert_served(server, expected: str) -> None:
    assert gateway_get(server, "/hello", "shop.example", expected) == expected


def gateway_get(server, path: str, host: str, expected: str) -> str:
    """The data plane's answer, retried briefly while the new config propagates."""
    deadline = time.monotonic() + 10
    last = ""
    while time.monotonic() < deadline:
        response = httpx.get(server.data_url + path, headers={"Host": host}, timeout=5)
        last = response.text
        if response.status_code == 200 and last == expected:
            break
        time.sleep(0.1)
    return last


def test_errors_exit_1(server, files, capsys):
    status, _, err = chistone(server, "push", "--tenant", "shop", files["script.lua"],
                              token="chs_wrongwro_nope", capsys=capsys)
    assert status == 1 and "HTTP 401" in err
    status, _, err = chistone(server, "push", "--tenant", "shop", files["changed.lua"],
                              token=server.read_token, capsys=capsys)
    assert status == 1 and "HTTP 403" in err and "write" in err
    status, _, err = chistone(server, "dump", "no-such-tenant", capsys=capsys)
    assert status == 1 and "HTTP 404" in err
    status, _, err = chistone(server, "push", "--tenant", "shop", "/nonexistent.lua",
                              capsys=capsys)
    assert status == 1 and "Cannot read" in err
    # Usage errors are 1, not argparse's 2 (2 means "changes found").
    with pytest.raises(SystemExit) as exit_info:
        main(["push"])
    assert exit_info.value.code == 1
    assert main(["--url", "http://127.0.0.1:1", "--token", "x", "dump", "shop"]) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CHISTONE_URL", raising=False)
        assert main(["--token", "x", "dump", "shop"]) == 1
    assert "CHISTONE_URL" in capsys.readouterr().err


FLOW_V1 = """\
local function auth(req, next) return next(req) end
chi.use(auth)
chi.get("/v1/{rest}", function(req) return respond(200, "v1 " .. req.params.rest) end)
chi.get("/v2/{rest}", function(req) return respond(200, "v1 " .. req.params.rest) end)
"""
# Moved down two lines (no change by name), /v2 answered differently, a route added.
FLOW_V2 = "\n\n" + FLOW_V1.replace('chi.get("/v2/{rest}", function(req) return respond(200',
                                   'chi.get("/v2/{rest}", function(req) return respond(201') \
    + 'chi.get("/new", function(req) return respond(200, "new") end)\n'
FLOW_TESTS = [{"name": "v1 answers", "request": {"path": "/v1/a"}, "expect": {"status": 200}}]
FLOW_FAILING = [{"name": "v2 is 200", "request": {"path": "/v2/a"}, "expect": {"status": 200}}]


def test_the_publish_flow_from_the_cli(server, tmp_path, capsys):
    def run(*args, **kwargs):
        return chistone(server, *args, capsys=capsys, **kwargs)

    for name, text in {"flow.json": json.dumps({
            "tenant": {"slug": "flow", "name": "Flow", "domains": ["flow.example"]},
            "backends": []}), "v1.lua": FLOW_V1, "v2.lua": FLOW_V2,
            "tests.json": json.dumps(FLOW_TESTS),
            "failing.json": json.dumps(FLOW_FAILING)}.items():
        (tmp_path / name).write_text(text)
    path = {name: str(tmp_path / name) for name in
            ("flow.json", "v1.lua", "v2.lua", "tests.json", "failing.json")}
    assert run("sync", path["flow.json"])[0] == 0
    status, out, err = run("push", "--tenant", "flow", path["v1.lua"], "--tests",
                           path["tests.json"], "--activate")
    assert status == 0, err
    # diff: the route table first (by middleware name: moved lines are no change).
    status, out, _ = run("diff", "--tenant", "flow", path["v2.lua"], "--exit-code")
    assert status == 2
    assert "routes against flow/v1:\n  + GET /new\n" in out and "~" not in out
    status, out, _ = run("push", "--tenant", "flow", path["v2.lua"], "--tests",
                         path["failing.json"])
    assert status == 1 and "+ GET /new" in out and "FAIL v2 is 200" in out
    assert run("test", "flow", "1")[0] == 0
    status, out, _ = run("test", "flow", "2")
    assert status == 1 and "FAIL v2 is 200" in out

    # Shadow v2, send traffic, read the mismatches.
    status, out, _ = run("shadow", "flow", "--start", "2", "--rate", "1")
    assert status == 0 and "v2 shadows 100.0% of requests" in out
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for rest in ("a", "b"):
            httpx.get(server.data_url + f"/v2/{rest}", headers={"Host": "flow.example"})
            httpx.get(server.data_url + f"/v1/{rest}", headers={"Host": "flow.example"})
        time.sleep(1.2)
        status, out, _ = run("shadow", "flow")
        if "/v2/{rest}" in out and "/v1/{rest}" in out:
            break
    assert "/v2/{rest}" in out and "active: respond 200" in out and "shadow: respond 201" in out
    v1_line = next(line for line in out.splitlines() if line.endswith("/v1/{rest}"))
    assert v1_line.split()[0] == "0"  # nothing differs on /v1
    assert "stopped" in run("shadow", "flow", "--stop")[1]

    # Roll it out under a guard: its stored test fails, so it is refused first ...
    status, out, err = run("activate", "flow", "2", "--percent", "10", "--max-error-rate",
                           "0.05", "--min-requests", "100", "--window", "60")
    assert status == 1 and "HTTP 422" in err and "FAIL v2 is 200" in out
    status, _, err = run("activate", "flow", "2", "--percent", "10", "--max-error-rate", "0.05")
    assert status == 1 and "--max-error-rate, --min-requests and --window together" in err
    # ... and overridden by a release manager's key.
    status, out, err = run("activate", "flow", "2", "--percent", "10", "--max-error-rate",
                           "0.05", "--min-requests", "100", "--window", "60",
                           "--override-tests", "--reason", "201 is right now",
                           token=server.override_token)
    assert status == 0, err
    assert "rolling out v2 to 10% (sticky by client IP), guarded" in out
    status, out, _ = run("rollout", "flow")
    assert "v2 answers 10% (sticky by client IP); v1 the rest" in out and "guard:" in out
    assert "v2 answers 40%" in run("rollout", "flow", "--percent", "40")[1]
    # Rolling back ends the rollout; v1 answers everything.
    status, out, _ = run("rollback", "flow")
    assert status == 0 and "rollout of v2 rolled back; v1 answers every request" in out
    assert "last rollout: v2 at 40%, rolled back" in run("rollout", "flow")[1]
    status, _, err = run("rollout", "flow", "--complete")
    assert status == 1 and "HTTP 404" in err
