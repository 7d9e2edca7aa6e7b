"""CPU per proxied request of the ASGI application alone: the gateway next to the passthrough.

bench/run.py measures whole servers; a difference of 10 us per request there drowns in the
server's own cost and the noise of a shared machine. This drives each ASGI application
directly from an in-process client (50 concurrent request loops, like wrk's 50 connections, no
ASGI server, no sockets on the client side), against the same nginx backend as the harness,
and reports the process CPU time per request (and the number of answers that were not 200,
which must be 0). The gateway runs with scenario 6's tenant,
script and settings (the access-log line included, written to a sink that discards it).

    .venv/bin/python bench/app_cpu.py                 # 3 alternating rounds of 20,000 requests
    .venv/bin/python bench/app_cpu.py --requests 5000 --rounds 1
    .venv/bin/python bench/app_cpu.py --shadow 0.1    # also the gateway with a shadow
                                                      # deciding on 10 % of the requests
    .venv/bin/python bench/app_cpu.py --jwt           # also the gateway with middleware.jwt
                                                      # (HS256 and RS256 bearer tokens)
    .venv/bin/python bench/app_cpu.py --rate-limit    # also the gateway with a Redis-backed
                                                      # middleware.rate_limit (a redis-server
                                                      # of its own, on the backend's core)

What it reports is what our own code adds per request on top of the upstream client:
"gateway minus passthrough". The backend is nginx when it is installed (bench/install_tools.sh),
else bench/anchors/backend.py; the driver is pinned to the last usable core and the backend
to the first, as in the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATH = "/api/v1/svc40/items/12345"
QUERY = b"page=2&limit=10&sort=desc"
HEADERS = [(b"host", b"bench.local"), (b"user-agent", b"chistone-bench/1.0 (wrk)"),
           (b"accept", b"application/json"), (b"accept-encoding", b"gzip, deflate"),
           (b"accept-language", b"en-GB,en;q=0.9"),
           (b"x-request-id", b"4f9c2b1e-7d3a-4c55-9e0b-bench"),
           (b"authorization", b"Bearer bench-token-0123456789abcdef"),
           (b"cookie", b"session=abc123def456; theme=dark")]


def scope(port: int, headers: list[tuple[bytes, bytes]] = HEADERS) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": QUERY,
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", port),
            "headers": headers}


def start_backend(workdir: Path, cpu: int | None, kind: str) -> tuple[subprocess.Popen, int]:
    """The harness's backend: nginx answering a small 200, or bench/anchors/backend.py."""
    from bench.run import free_port, wait_ready

    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if kind == "nginx" or (kind == "auto" and nginx):
        if nginx is None:
            raise SystemExit("nginx is not installed (bench/install_tools.sh)")
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = (ROOT / "bench/anchors/backend.nginx.conf").read_text()
        path = workdir / "backend.conf"
        path.write_text(conf.replace("@PREFIX@", str(workdir)).replace("@PORT@", str(port)))
        argv = [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(path)]
    else:
        argv = [sys.executable, str(ROOT / "bench/anchors/backend.py"), "--port", str(port)]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    log = workdir / "backend.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(port, procs=[("backend", proc, log)], timeout=15, what="backend")
    return proc, port


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


# The response phase's price: the same script with one middleware that adds a header to
# every proxied answer (it only writes, so the gateway applies it while relaying).
HEADER_MIDDLEWARE = """
chi.use(function(req, next)
  local res = next(req)
  res.headers["x-served-by"] = "chistone"
  return res
end)
"""


def jwt_middleware(alg: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """middleware.jwt in front of every route, verifying an `alg` token (HS256: a shared
    secret written in the script; RS256: a 2048-bit RSA public key as PEM), and the request
    headers carrying a valid token for it (the benchmark's other headers unchanged)."""
    import json
    import time as clock

    from joserfc import jwt
    from joserfc.jwk import OctKey, RSAKey

    if alg == "HS256":
        key = OctKey.generate_key(256)
        text = json.dumps(key.as_dict(private=True))
    else:
        key = RSAKey.generate_key(2048)
        text = key.as_pem(private=False).decode().replace("\n", "\\n")
    token = jwt.encode({"alg": alg}, {"sub": "bench", "iss": "https://idp.bench",
                                      "exp": int(clock.time()) + 86400}, key)
    middleware = (f"chi.use(middleware.jwt{{keys = {{'{text}'}}, algorithms = {{'{alg}'}}, "
                  f"issuer = 'https://idp.bench'}})\n")
    headers = [(k, f"Bearer {token}".encode() if k == b"authorization" else v)
               for k, v in HEADERS]
    return middleware, headers
# Shared state's price: the same script behind middleware.rate_limit on Redis. The limit is
# one key (every request comes from one address), high enough that every request passes:
# each one is an EVALSHA round trip (the sliding-window log) while the script waits.
from bench.seed import RATE_LIMIT as RATE_LIMIT_MIDDLEWARE  # noqa: E402 - after sys.path


def start_redis(workdir: Path, cpu: int | None) -> tuple[subprocess.Popen, str]:
    """A redis-server without persistence on a free loopback port (pinned with the backend)."""
    from bench.run import free_port, redis_answers

    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(workdir)]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if not redis_answers(port, proc):
        proc.kill()
        raise SystemExit("redis-server did not start")
    return proc, f"redis://127.0.0.1:{port}/0"


def _tracing(workdir: Path) -> object:
    """Traces exported over OTLP/HTTP to a receiver in a thread that reads and discards them
    (the SDK's batch processor works in its own thread, as it would in production)."""
    import http.server
    import threading

    from routing.tracing import Tracing

    class Discard(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Tracing.create({"OTEL_EXPORTER_OTLP_ENDPOINT":
                           f"http://127.0.0.1:{server.server_address[1]}"})


def gateway_app(backend_port: int, *, middleware: str = "", tracing: object = None,
                shadow: float | None = None, shared_state: object = None):
    """The data plane's Gateway with scenario 6's tenant, built without a database; with
    `shadow`, a shadow version (the same routes, one of them sent elsewhere) decides on that
    share of the requests after they are answered (routing.shadow)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
    import django

    django.setup()
    from bench.seed import script_source
    from luascripts.engine import load_script
    from routing.conf import get_conf
    from routing.gateway import Gateway
    from routing.snapshot import BackendEntry, SnapshotHolder, TenantEntry, compile_snapshot
    from routing.upstream import make_transport

    backend = BackendEntry.from_url(id=1, tenant="bench", name="backend",
                                    url=f"http://127.0.0.1:{backend_port}")
    script = load_script(middleware + script_source(50), tenant="bench",
                         backend_names=["backend"])
    entry = TenantEntry(id=1, slug="bench", name="Benchmark", prefix="", domains=("bench.local",),
                        backends=MappingProxyType({"backend": backend}),
                        default_pool=(backend,), script=script, version_id=1,
                        version_number=1)
    if shadow is not None:
        from dataclasses import replace

        from routing.shadow import ShadowEntry

        # The candidate answers the benchmark's route itself (registered last, it replaces
        # the proxying one): every comparison is a mismatch, samples are kept.
        candidate = load_script(
            middleware + script_source(50)
            + '\nchi.get("/api/v1/svc40/items/{id}", function(req) return respond(200, "x") end)\n',
            tenant="bench", backend_names=["backend"])
        entry = replace(entry, shadow=ShadowEntry(id=1, script=candidate, version_id=2,
                                                  version_number=2, rate=shadow))
    holder = SnapshotHolder()
    holder.swap(compile_snapshot(1, [entry]))
    conf = get_conf()
    client = os.environ.get("BENCH_UPSTREAM_CLIENT")  # "h1" or "aiohttp"; default: the setting
    if client:
        import dataclasses

        conf = dataclasses.replace(conf, upstream_client=client)
    return Gateway(holder=holder, transport=make_transport(conf), conf=conf, tracing=tracing,
                   shared_state=shared_state)


async def drive(app, port: int, requests: int, concurrency: int,
                headers: list[tuple[bytes, bytes]] = HEADERS) -> tuple[float, float, int]:
    """(process CPU seconds, wall seconds, non-200 answers) for `requests` requests."""
    template = scope(port, headers)
    pending = requests
    errors = 0

    async def one_loop() -> None:
        nonlocal pending, errors
        never = asyncio.get_running_loop().create_future()
        while pending > 0:
            pending -= 1
            first = True

            async def receive():
                nonlocal first
                if first:
                    first = False
                    return {"type": "http.request", "body": b"", "more_body": False}
                return await never  # the client stays connected

            status = 0

            async def send(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await app(dict(template), receive, send)
            if status != 200:
                errors += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_loop() for _ in range(concurrency)))
    shadow = getattr(app, "shadow", None)
    while shadow is not None and (shadow.queue or shadow.scheduled):  # noqa: ASYNC110
        await asyncio.sleep(0)  # the shadow's work for these requests counts too
    return time.process_time() - cpu, time.perf_counter() - wall, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", choices=("gateway", "passthrough", "gateway+header",
                                           "gateway+shadow", "gateway+ratelimit"))
    parser.add_argument("--tracing", action="store_true",
                        help="also run the gateway exporting traces over OTLP/HTTP to a local "
                             "receiver that discards them (gateway+traces)")
    parser.add_argument("--header-middleware", action="store_true",
                        help="also run the gateway with a middleware that adds one header to "
                             "every proxied answer (gateway+header)")
    parser.add_argument("--shadow", type=float, metavar="RATE",
                        help="also run the gateway with a shadow deciding on this share of "
                             "the requests (gateway+shadow)")
    parser.add_argument("--jwt", action="store_true",
                        help="also run the gateway with middleware.jwt verifying an HS256 and "
                             "an RS256 bearer token (gateway+jwt-hs256, gateway+jwt-rs256)")
    parser.add_argument("--rate-limit", action="store_true",
                        help="also run the gateway with middleware.rate_limit on a Redis of "
                             "its own (gateway+ratelimit)")
    parser.add_argument("--backend", choices=("auto", "nginx", "python"), default="auto",
                        help="nginx when installed (auto), or the minimal asyncio server")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[-1]})
    workdir = Path(tempfile.mkdtemp(prefix="chistone-appcpu-"))
    backend, backend_port = start_backend(workdir, cpus[0] if len(cpus) >= 2 else None,
                                          args.backend)
    redis = None
    degraded: list[str] = []  # rate-limit answers given without Redis: must stay empty
    try:
        import logging

        from bench.passthrough import Passthrough
        from routing import stats

        apps = {}
        if args.only in (None, "passthrough"):
            apps["passthrough"] = Passthrough(f"http://127.0.0.1:{backend_port}")
        if args.only in (None, "gateway"):
            apps["gateway"] = gateway_app(backend_port)
            logging.getLogger("chistone.access").handlers[:] = []
        if args.tracing:
            apps["gateway+traces"] = gateway_app(backend_port, tracing=_tracing(workdir))
            logging.getLogger("chistone.access").handlers[:] = []
        if args.only == "gateway+header" or (args.only is None and args.header_middleware):
            apps["gateway+header"] = gateway_app(backend_port, middleware=HEADER_MIDDLEWARE)
            logging.getLogger("chistone.access").handlers[:] = []
        if args.only == "gateway+shadow" or (args.only is None and args.shadow is not None):
            apps["gateway+shadow"] = gateway_app(backend_port, shadow=args.shadow or 0.1)
            logging.getLogger("chistone.access").handlers[:] = []
        app_headers: dict[str, list[tuple[bytes, bytes]]] = {}  # default: HEADERS
        if args.jwt:
            for alg in ("HS256", "RS256"):
                name = f"gateway+jwt-{alg.lower()}"
                middleware, app_headers[name] = jwt_middleware(alg)
                apps[name] = gateway_app(backend_port, middleware=middleware)
                logging.getLogger("chistone.access").handlers[:] = []
        if args.only == "gateway+ratelimit" or (args.only is None and args.rate_limit):
            from routing.shared_state import RedisStore

            redis, redis_url = start_redis(workdir, cpus[0] if len(cpus) >= 2 else None)
            store = RedisStore(redis_url, timeout_s=1.0,
                               on_unavailable=lambda tenant, op: degraded.append(op))
            apps["gateway+ratelimit"] = gateway_app(backend_port, middleware=RATE_LIMIT_MIDDLEWARE,
                                                    shared_state=store)
            logging.getLogger("chistone.access").handlers[:] = []
        results: dict[str, list[float]] = {name: [] for name in apps}
        failed = 0

        from chistone_site.planes import settle_heap

        async def run() -> None:
            nonlocal failed
            handler = stats.install_buffered_access_log()
            if handler is not None:
                handler.stream = _Discard()
            for name, app in apps.items():  # warm up: pools, caches, first allocations
                await drive(app, 8000, 2000, args.concurrency, app_headers.get(name, HEADERS))
            settle_heap()  # as the data plane does once it has started
            for n in range(args.rounds):
                for name, app in apps.items():
                    cpu, wall, errors = await drive(app, 8000, args.requests, args.concurrency,
                                                    app_headers.get(name, HEADERS))
                    failed += errors
                    results[name].append(cpu * 1e6 / args.requests)
                    print(f"round {n + 1} {name:12s} {cpu * 1e6 / args.requests:7.1f} us/req CPU"
                          f"  {args.requests / wall:8,.0f} req/s  errors {errors}", flush=True)
            for app in apps.values():
                close = getattr(getattr(app, "transport", None) or getattr(app, "upstream", None),
                                "close", None)
                if close is not None:
                    await close()
                state = getattr(app, "shared_state", None)
                if state is not None:
                    await state.close()

        asyncio.run(run())
        medians = {name: statistics.median(values) for name, values in results.items()}
        for name, value in medians.items():
            print(f"median {name:12s} {value:7.1f} us/req")
        if failed:
            raise SystemExit(f"app_cpu: {failed} answers were not 200: the numbers above "
                             "do not measure proxied requests")
        if "gateway" in medians and "passthrough" in medians:
            print(f"gateway - passthrough: {medians['gateway'] - medians['passthrough']:.1f} "
                  f"us/req; ratio {medians['passthrough'] / medians['gateway']:.2f}")
        if "gateway" in medians and "gateway+traces" in medians:
            extra = medians["gateway+traces"] / medians["gateway"] - 1
            print(f"trace export: {extra * 100:+.1f}% CPU per proxied request")
        if "gateway" in medians and "gateway+header" in medians:
            extra = medians["gateway+header"] / medians["gateway"] - 1
            print(f"header middleware: {extra * 100:+.1f}% CPU per proxied request")
        for name in ("gateway+jwt-hs256", "gateway+jwt-rs256"):
            if "gateway" in medians and name in medians:
                extra = medians[name] - medians["gateway"]
                print(f"{name.removeprefix('gateway+')}: {extra:+.1f} us CPU per proxied "
                      f"request ({extra / medians['gateway'] * 100:+.1f}%)")
        if "gateway" in medians and "gateway+ratelimit" in medians:
            extra = medians["gateway+ratelimit"] / medians["gateway"] - 1
            print(f"rate limit on Redis: {extra * 100:+.1f}% CPU per proxied request "
                  f"({medians['gateway+ratelimit'] - medians['gateway']:+.1f} us; "
                  f"{len(degraded)} answers without Redis)")
            if degraded:
                raise SystemExit("app_cpu: some rate-limit answers were given without Redis: "
                                 "the numbers above do not measure the round trip")
        if "gateway+shadow" in apps:
            runner = apps["gateway+shadow"].shadow
            same, different, dropped = runner.totals.get("bench", [0, 0, 0])
            print(f"shadow at {args.shadow or 0.1:g}: {runner.ran} comparisons "
                  f"({runner.seconds * 1e6 / max(runner.ran, 1):.0f} us CPU each), "
                  f"{different} mismatches, {dropped} dropped (busy)")
            if "gateway" in medians:
                extra = medians["gateway+shadow"] - medians["gateway"]
                print(f"shadow: {extra:+.1f} us CPU per request "
                      f"({extra / medians['gateway'] * 100:+.1f}%)")
    finally:
        backend.terminate()
        backend.wait(timeout=10)
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
