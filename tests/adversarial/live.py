"""The one real server the adversarial suite shares, and the hostile backends behind it.

`manage.py serve` (supervisor + one daphne worker) on a temporary SQLite file, seeded through
tests/e2e/seed.py, with the backends of tests/e2e/backends.py plus `FaultyBackend`, which adds
the faults that farm does not offer (garbage, a silent close, a black hole, an invalid status
line, oversized headers, a redirect to an internal address). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.adversarial.differential.recorder import Recorder
from tests.e2e.backends import Backend, BackendFarm, dead_url
from tests.serving import MANAGE, ROOT, Served

# -- backends ---------------------------------------------------------------------------------


# Responses a proxy cannot pass on as they are (GET /canned/<name>): each must become a 502
# or a response the gateway framed itself, never these bytes.
CANNED = {
    "ctl-in-value": b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "del-in-value": b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "space-in-name": b"HTTP/1.1 200 OK\r\nX Bad: a\r\nContent-Length: 2\r\n\r\nok",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\nok",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "te-identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n"
                   b"Content-Length: 2\r\n\r\nok",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0x2\r\nok\r\n0\r\n\r\n",
    "chunk-too-long": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"1\r\nok\r\n0\r\n\r\n",
    "status-letters": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    "http-09": b"ok, no status line at all\r\n",
}


class FaultyBackend(Backend):
    """The e2e backend (echo, /slow, /drip, /reset, /reset-early, /clte, /big, /hop, ...)
    plus faults of its own, chosen by the path's last segment."""

    redirect_to: str = ""

    async def _answer(self, writer, method, target, headers, size, sha) -> bool:
        path = urlsplit(target).path
        if "/canned/" in path:
            writer.write(CANNED[path.rsplit("/", 1)[1]])
            await writer.drain()
            return False
        if path.endswith("/garbage"):
            writer.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return False
        if path.endswith("/silent-close"):  # read the request, close with FIN, answer nothing
            return False
        if path.endswith("/blackhole"):  # accept and read, then never answer
            await asyncio.sleep(8)
            return False
        if path.endswith("/bad-status"):
            writer.write(b"HTTP/1.1 2000 WHAT\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return False
        if path.endswith("/huge-header"):
            writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 200_000
                         + b"\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return False
        if path.endswith("/redirect-internal"):
            return await self._send(writer, 302, b"", [("Location", self.redirect_to)],
                                    reason="Found")
        return await super()._answer(writer, method, target, headers, size, sha)


def add_backend(farm: BackendFarm, name: str, cls: type[Backend] = Backend) -> Backend:
    backend = cls(name)
    farm.run(backend.start())
    farm.backends[name] = backend
    return backend


# -- the tenants ------------------------------------------------------------------------------

ADV_SCRIPT = r"""
local kept = {}

chi.get("/ok", function(req) return respond(200, "ok " .. req.tenant) end)
chi.get("/whoami", function(req)
  return respond(200, json.encode({ip = req.client_ip, scheme = req.scheme, host = req.host,
                                   xff = req.headers["x-forwarded-for"] or json.null}))
end)
chi.mount("/raw", "echo")

-- a script that waits longer than the watchdog's hang timeout: waiting is not hanging
chi.get("/wait-long", function(req)
  local res, err = http.request("echo", {path = "/slow", query = "s=4.5", timeout_ms = 8000})
  return respond(200, res and res.body or err)
end)

-- header injection attempts: every one must fail in the script, nothing reaches the backend
chi.get("/inject/set-crlf", function(req)
  return proxy("echo", {set_headers = {["x-a"] = "1\r\nx-injected: yes"}})
end)
chi.get("/inject/set-lf", function(req)
  return proxy("echo", {set_headers = {["x-a"] = "1\nx-injected: yes"}})
end)
chi.get("/inject/set-nul", function(req)
  return proxy("echo", {set_headers = {["x-a"] = "1\0x"}})
end)
chi.get("/inject/name", function(req)
  return proxy("echo", {set_headers = {["x-a\r\nx-injected"] = "1"}})
end)
chi.get("/inject/req-header", function(req)
  req.headers["x-a"] = "1\r\nx-injected: yes"
  return proxy("echo")
end)
chi.get("/inject/respond", function(req)
  return respond(200, "x", {["x-a"] = "1\r\nset-cookie: evil=1"})
end)
chi.get("/inject/legacy", function(req)
  return {selected_backend = "echo", modified_headers = {["x-a"] = "1\r\nx-injected: yes"}}
end)
chi.get("/inject/path", function(req)
  return proxy("echo", {path = "/x\r\nHost: evil.example"})
end)
chi.get("/inject/authority", function(req)
  return proxy("echo", {path = "//evil.example/x"})
end)
chi.get("/inject/dots", function(req)
  return proxy("echo", {path = "/a/%2e%2e/admin"})
end)
chi.get("/inject/query", function(req)
  return proxy("echo", {query = "a=1 HTTP/1.1\r\nHost: evil"})
end)
-- the gateway's own headers cannot be overridden by a script either
chi.get("/managed", function(req)
  return proxy("echo", {set_headers = {host = "evil.example", ["x-forwarded-for"] = "6.6.6.6",
                                       ["x-forwarded-host"] = "evil.example",
                                       ["x-request-id"] = "forged", forwarded = "for=6.6.6.6",
                                       connection = "x-keep", ["x-keep"] = "1",
                                       ["transfer-encoding"] = "chunked", te = "trailers",
                                       upgrade = "websocket"}})
end)

-- resource abuse
chi.get("/loop", function(req) while true do end end)
chi.get("/membomb", function(req)
  local s = "x"
  while true do s = s .. s end
end)
chi.get("/state", function(req)
  kept[#kept + 1] = ("s"):rep(3 * 1024 * 1024) .. #kept
  return respond(200, tostring(#kept))
end)
chi.get("/header-bytes", function(req)
  local n = 0
  for _, v in pairs(req.headers) do n = n + #v end
  return respond(200, tostring(n))
end)
"""

NEIGHBOUR_SCRIPT = r"""
chi.get("/ok", function(req) return respond(200, "neighbour ok") end)
chi.get("/up", function(req) return proxy("echo") end)
"""

FAULTS_SCRIPT = r"""
local function via(path, backend, upstream, opts)
  opts = opts or {}
  opts.path = upstream
  chi.get(path, function(req) return proxy(backend, opts) end)
end
chi.get("/refused", function(req) return proxy("refused") end)
via("/blackhole", "hole", "/blackhole")
via("/silent", "silent", "/silent-close")
via("/reset-early", "rst", "/reset-early")
via("/reset-mid", "rstmid", "/reset")
via("/drip", "drip", "/drip", {timeout_ms = 1500})
via("/garbage", "garbage", "/garbage")
via("/bad-status", "badstatus", "/bad-status")
via("/huge-header", "hugehdr", "/huge-header")
via("/clte", "clte", "/clte")
via("/big", "big", "/big")
via("/gzip", "big", "/gzip")
via("/hop", "big", "/hop")
via("/redirect", "redir", "/redirect-internal")
chi.get("/good/*", function(req) return proxy({"rstmid"}, {path = "/echo"}) end)
chi.mount("/canned", "garbage")
"""


# A script that escapes its CPU budget today (table.move runs as one uninterruptible C call):
# the worker watchdog has to contain it. Its own tenant, since the watchdog disables it.
WATCHDOG_SCRIPT = r"""
chi.get("/ok", function(req) return respond(200, "wd ok") end)
chi.get("/escape", function(req)
  table.move({}, 1, 2^50, 2)
  return respond(200, "moved")
end)
"""


def versioned_script(version: str) -> str:
    """A middleware and a handler from the same version: a mixed answer would show it."""
    return (
        f'local V = "{version}"\n'
        "chi.use(function(req, next)\n"
        "  local a = next(req)\n"
        '  return respond(a.status, a.body .. "|mw-" .. V, {["x-version"] = V})\n'
        "end)\n"
        'chi.get("/v", function(req) return respond(200, "handler-" .. V) end)\n'
    )


@dataclass
class Farm:
    farm: BackendFarm
    echo: Backend
    faulty: FaultyBackend
    canary: Backend
    refused_url: str
    smuggle: Backend
    # The differential suite's recording backends: one behind nginx, one behind chistone.
    recorders: dict[str, Recorder]

    def close(self) -> None:
        for recorder in self.recorders.values():
            self.farm.run(recorder.stop())
        self.farm.close()


def make_farm() -> Farm:
    farm = BackendFarm()
    echo = add_backend(farm, "adv-echo")
    faulty = add_backend(farm, "adv-faulty", FaultyBackend)
    canary = add_backend(farm, "adv-canary")
    faulty.redirect_to = f"{canary.url}/stolen"
    smuggle = add_backend(farm, "adv-smuggle")
    recorders = {name: Recorder(name) for name in ("nginx", "chistone")}
    for recorder in recorders.values():
        farm.run(recorder.start())
    return Farm(farm, echo, faulty, canary, dead_url(), smuggle, recorders)


def spec(farm: Farm) -> dict:
    echo, faulty = farm.echo.url, farm.faulty.url
    fault_names = ["hole", "silent", "rst", "rstmid", "drip", "garbage", "badstatus",
                   "hugehdr", "clte", "big", "redir"]
    return {"tenants": [
        {"slug": "adv", "domains": ["adv.test"], "script": ADV_SCRIPT,
         "backends": [{"name": "echo", "url": echo}]},
        {"slug": "nb", "domains": ["nb.test"], "script": NEIGHBOUR_SCRIPT,
         "backends": [{"name": "echo", "url": echo}]},
        {"slug": "plain", "domains": ["plain.test"], "backends": [{"name": "echo", "url": echo}]},
        # No script: every request proxies to the recording backend (the differential suite).
        {"slug": "diff", "domains": ["diff.test"],
         "backends": [{"name": "recorder", "url": farm.recorders["chistone"].url}]},
        # No script: every request proxies to the echo backend (the smuggler scan's target).
        {"slug": "smuggle", "domains": ["smuggle.test"],
         "backends": [{"name": "echo", "url": farm.smuggle.url}]},
        {"slug": "faults", "domains": ["faults.test"], "script": FAULTS_SCRIPT,
         "backends": [{"name": "refused", "url": farm.refused_url},
                      *({"name": name, "url": faulty, "read_timeout_ms": 800}
                        for name in fault_names)]},
        {"slug": "swap", "domains": ["swap.test"], "script": versioned_script("v1"),
         "backends": [{"name": "echo", "url": echo}]},
        {"slug": "race", "domains": ["race.test"], "script": versioned_script("r1"),
         "backends": [{"name": "echo", "url": echo}]},
        {"slug": "wd", "domains": ["wd.test"], "script": WATCHDOG_SCRIPT,
         "backends": [{"name": "echo", "url": echo}]},
    ]}


# -- the server -------------------------------------------------------------------------------


@dataclass
class Live:
    served: Served
    farm: Farm
    db: Path
    api_key: str

    @property
    def data(self) -> str:
        return self.served.data

    @property
    def control(self) -> str:
        return self.served.control

    @property
    def data_port(self) -> int:
        return self.served.data_port

    @property
    def env(self) -> dict[str, str]:
        return self.served.env

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 10)
        return httpx.Client(base_url=self.data, trust_env=False, **kw)

    def api(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=f"{self.control}/api/v1/", trust_env=False, timeout=30,
                            headers={"Authorization": f"Bearer {self.api_key}"}, **kw)

    def get(self, host: str, path: str, **kw) -> httpx.Response:
        with self.client() as client:
            return client.get(path, headers={"Host": host, **kw.pop("headers", {})}, **kw)

    def worker_pids(self) -> set[int]:
        return self.served.worker_pids()

    def log_text(self) -> str:
        return self.served.log_text()

    def log_size(self) -> int:
        return self.served.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.served.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*MANAGE, *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, check=True)

    def wait_for(self, host: str, path: str, predicate, timeout: float = 10.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                response = client.get(path, headers={"Host": host})
                if predicate(response) or time.monotonic() > deadline:
                    return response
                time.sleep(0.05)


def create_api_key(env: dict[str, str], name: str, scopes: str) -> str:
    out = subprocess.run([*MANAGE, "create_api_key", "--name", name, "--scope", scopes],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return out.strip().splitlines()[-1]
