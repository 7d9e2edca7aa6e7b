"""CPU per Lua step of scenario 6's script and of the response-phase variants, in-process.

Not a test: run it by hand on an otherwise idle machine.

    .venv/bin/python bench/engine_step.py [--requests 40000] [--rounds 2] [VARIANT ...]

Each variant is scenario 6's script (bench/seed.py: one middleware, 50 routes) with one more
middleware in front; a request is `LoadedScript.start` and, for a script that waits, its
`resume`s with the answer a store would give (no I/O: the engine and the boundary alone).

- plain: scenario 6's script as it is;
- header: a middleware that sets one response header (`app_cpu.py --header-middleware`);
- 3headers: the same with three headers;
- wait: a middleware that calls `limit.allow` and passes the request on (one wait);
- ratelimit: `middleware.rate_limit{...}` as scenario 13 (one wait, three headers whose
  values change on every request).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seed import RATE_LIMIT, script_source
from luascripts.engine import ScriptRequest, load_script
from luascripts.engine.effects import LimitAnswer
from luascripts.engine.script import ScriptRun

VARIANTS = {
    "plain": "",
    "header": "chi.use(function(req, next) local res = next(req); "
              "res.headers['x-served-by'] = 'chistone'; return res end)\n",
    "3headers": "chi.use(function(req, next) local res = next(req); local h = res.headers; "
                "h['x-a'] = '1'; h['x-b'] = '2'; h['x-c'] = '3'; return res end)\n",
    "wait": "chi.use(function(req, next) limit.allow('k' .. req.client_ip, 100000, 1) "
            "return next(req) end)\n",
    "ratelimit": RATE_LIMIT,
}
HEADERS = {"host": "bench.local", "user-agent": "chistone-bench/1.0 (wrk)",
           "accept": "application/json", "accept-encoding": "gzip, deflate",
           "accept-language": "en-US,en;q=0.9", "x-request-id": "abc",
           "authorization": "Bearer xyz", "cookie": "session=abc123"}
REQUEST = ScriptRequest(method="GET", path="/api/v1/svc40/items/12345",
                        query_string="page=2&limit=10&sort=desc", host="bench.local",
                        scheme="http", client_ip="127.0.0.1", headers=HEADERS, tenant="bench",
                        request_id="abc")


def measure(variant: str, requests: int) -> float:
    script = load_script(VARIANTS[variant] + script_source(50), tenant="bench",
                         backend_names=["backend"])
    served = 0

    def one() -> None:
        nonlocal served
        step = script.start(REQUEST)
        while isinstance(step, ScriptRun):
            served += 1
            step = step.resume(LimitAnswer(True, 100000, served % 100000, 0.0))

    for _ in range(3000):
        one()
    started = time.process_time()
    for _ in range(requests):
        one()
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help=f"any of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; expected one of {', '.join(VARIANTS)}")
    for n in range(args.rounds):
        for variant in args.variants or VARIANTS:
            print(f"round {n + 1} {variant:10s} {measure(variant, args.requests):7.2f} us/step",
                  flush=True)


if __name__ == "__main__":
    main()
