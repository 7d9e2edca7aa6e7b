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

    # activate v2 (its stored test fails: skip it), then roll back to v1.
    assert run("activate", "shop", "2")[0] == 1
    assert run("activate", "shop", "2", "--skip-tests")[0] == 0
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
