"""Per-request cost of the Lua step: build the request, match, middleware, handler, result.

Not a test: run it by hand on an otherwise idle machine and read the percentiles.

    .venv/bin/python bench/lua_step.py [--iterations 20000] [--routes 50]

The script registers `--routes` routes (a mix of static, `{param}`, `{param:regexp}` and a
catch-all mount, across route groups) behind one middleware that reads a header, and the
requests cycle through paths that hit every kind, with a realistic set of 12 headers.
Target: p50 under 15 us on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from luascripts.engine import LoadedScript, ScriptRequest, load_script

BACKENDS = ["users-v1", "users-v2", "orders", "catalog", "legacy"]


def script(routes: int) -> str:
    lines = [
        "local function tag(req, next)",
        "  if req.headers['x-debug'] == 'drop' then return reject(400, 'debug drop') end",
        "  return next(req)",
        "end",
        "chi.use(tag)",
        "chi.mount('/legacy', 'legacy')",
        "chi.get('/health', function(req) return respond(200, 'ok') end)",
        "chi.get('/api/v1/{version}/users', function(req)",
        "  return proxy(req.params.version == 'v2' and 'users-v2' or 'users-v1')",
        "end)",
    ]
    made = 3
    group = 0
    while made < routes:
        group += 1
        lines.append(f"chi.route('/svc{group}', function(r)")
        for kind in range(min(10, routes - made)):
            if kind % 3 == 0:
                lines.append(f"  r.get('/items{kind}', function(req) return proxy('catalog') end)")
            elif kind % 3 == 1:
                lines.append(f"  r.get('/items{kind}/{{id}}', function(req)")
                lines.append("    return proxy('orders', {path = '/v2/orders/' .. req.params.id})")
                lines.append("  end)")
            else:
                lines.append(f"  r.post('/items{kind}/{{id:[0-9]+}}/edit', function(req)")
                lines.append("    return proxy({'users-v1', 'users-v2'},"
                             " {hash_key = req.client_ip})")
                lines.append("  end)")
            made += 1
        lines.append("end)")
    return "\n".join(lines) + "\n"


HEADERS = {
    "host": "acme.example.com", "user-agent": "bench/1.0 (x86_64)", "accept": "*/*",
    "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
    "content-type": "application/json", "x-request-id": "4f1c2a9e-8b7d-4e0c-9f3a-6d2b1c0e5a47",
    "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https",
    "cookie": "session=abc123; ab=b; theme=dark", "authorization": "Bearer t0k3n",
    "x-debug": "no",
}


def requests() -> list[ScriptRequest]:
    paths = [
        ("GET", "/api/v1/v2/users"), ("GET", "/api/v1/v1/users"), ("GET", "/health"),
        ("GET", "/svc1/items0"), ("GET", "/svc2/items1/12345"), ("POST", "/svc3/items2/42/edit"),
        ("GET", "/legacy/some/old/page"), ("GET", "/svc4/items4/abc"), ("GET", "/nowhere"),
    ]
    return [ScriptRequest(method, path, "page=2&sort=name", "acme.example.com", "https",
                          "203.0.113.7", HEADERS, "acme", f"req-{i}")
            for i, (method, path) in enumerate(paths)]


def measure(loaded: LoadedScript, reqs: list[ScriptRequest], iterations: int) -> list[float]:
    for _ in range(2000):  # warm up
        for r in reqs:
            loaded.handle(r)
    samples = []
    n = len(reqs)
    clock = time.perf_counter_ns
    handle = loaded.handle
    for i in range(iterations):
        r = reqs[i % n]
        t0 = clock()
        handle(r)
        samples.append((clock() - t0) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--routes", type=int, default=50)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    loaded = load_script(script(args.routes), tenant="acme", backend_names=BACKENDS)
    print(f"{len(loaded.routes)} routes, {loaded.memory_used // 1024} KiB of Lua memory")
    reqs = requests()
    samples = sorted(measure(loaded, reqs, args.iterations))
    q = statistics.quantiles(samples, n=100)
    print(f"{args.iterations} requests: p50 {q[49]:.1f} us, p90 {q[89]:.1f} us, "
          f"p99 {q[98]:.1f} us, mean {statistics.fmean(samples):.1f} us")
    for r in reqs:
        out = loaded.handle(r)
        print(f"  {r.method:5} {r.path:24} -> {type(out.action).__name__} {out.route_pattern}")


if __name__ == "__main__":
    main()
