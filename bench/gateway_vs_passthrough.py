"""Issue 4's benchmark: the gateway under daphne against a bare passthrough under daphne.

One run, side by side, alternating rounds (the machine is shared and noisy: compare the ratio,
not absolute numbers). Both servers are pinned to one core (taskset), wrk (1 thread, 50
connections) and the backend to another; every request carries 8 headers and a query string.

- backend: nginx answering a small 200 (a minimal asyncio server when nginx is absent);
- passthrough: `bench.passthrough:application` (raw ASGI, aiohttp client, no tenant, no Lua,
  no Django) under daphne;
- gateway: `chistone_site.asgi:application` under daphne, one tenant with a 50-route script
  and one middleware (`bench/seed.py`), its access log on, as in production.

    .venv/bin/python bench/gateway_vs_passthrough.py [--duration 10] [--rounds 3]

Target: gateway requests/s >= 0.85 x passthrough requests/s. Prints a table and writes
bench/out/gateway_vs_passthrough.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DOMAIN = "bench.local"
PATH = "/api/v1/svc25/items/123?x=1&y=two"
HEADERS = [
    ("Host", DOMAIN), ("User-Agent", "chistone-bench/1.0 (wrk)"), ("Accept", "application/json"),
    ("Accept-Language", "en"), ("X-Request-ID", "bench-request-0001"),
    ("X-Tenant-Hint", "bench"), ("Authorization", "Bearer bench-token"),
    ("Cookie", "session=abc123"),
]
NGINX_CONF = """daemon off; master_process off; worker_processes 1;
pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json;
    return 200 '{{"ok":true}}\\n'; }} }} }}
"""
ASYNC_BACKEND = """
import asyncio, sys
BODY = b'{"ok":true}\\n'
RESP = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
        b"Content-Length: 12\\r\\n\\r\\n" + BODY)
async def serve(r, w):
    try:
        while True:
            await r.readuntil(b"\\r\\n\\r\\n"); w.write(RESP)
    except Exception:
        w.close()
async def main():
    s = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await s.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(argv: list[str], core: int | None) -> list[str]:
    if core is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *argv]
    return argv


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=dict(HEADERS))
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def parse_wrk(output: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rps, "requests": requests, "p50_ms": latency("50"),
            "p99_ms": latency("99"), "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (from /proc), to get CPU per request under noise."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, connections: int, core: int | None) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in HEADERS:
        argv += ["-H", f"{name}: {value}"]
    output = subprocess.run(pinned([*argv, url], core), capture_output=True, text=True,
                            check=True, timeout=seconds + 60).stdout
    return parse_wrk(output)


def python_load(url: str, seconds: float, connections: int) -> dict[str, float]:
    """A bounded fallback when wrk is missing: aiohttp clients on keep-alive connections."""
    import asyncio

    import aiohttp

    async def run() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        stop = time.monotonic() + seconds

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal errors
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    async with session.get(url, headers=dict(HEADERS)) as response:
                        await response.read()
                        errors += response.status != 200
                except aiohttp.ClientError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(connections)))
        latencies.sort()
        return {"rps": len(latencies) / seconds, "requests": len(latencies),
                "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[int(len(latencies) * 0.99)], "errors": errors}

    return asyncio.run(run())


class Stack:
    def __init__(self, workdir: Path, server_core: int | None, client_core: int | None) -> None:
        self.workdir = workdir
        self.server_core = server_core
        self.client_core = client_core
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], core: int | None
              ) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(pinned(argv, core), env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--routes", type=int, default=50)
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[1], cores[0]) if len(cores) >= 2 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="chistone-bench-dp-"))
    stack = Stack(workdir, server_core, client_core)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE":
           "chistone_site.settings", "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
           "CHISTONE_VAR_DIR": str(workdir)}
    try:
        backend_port = free_port()
        if shutil.which("nginx"):
            (workdir / "tmp").mkdir()
            conf = workdir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(prefix=workdir, port=backend_port))
            stack.start("backend", ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"),
                                    "-c", str(conf)], env, client_core)
            backend_kind = "nginx"
        else:
            stack.start("backend", [PY, "-c", ASYNC_BACKEND, str(backend_port)], env,
                        client_core)
            backend_kind = "asyncio"
        backend_url = f"http://127.0.0.1:{backend_port}"
        wait_http(backend_url + "/")

        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT,
                       check=True)
        subprocess.run([PY, "bench/seed.py", "--backend-url", backend_url, "--domain", DOMAIN,
                        "--routes", str(args.routes)], env=env, cwd=ROOT, check=True)

        gw_port, control_port, pt_port = free_port(), free_port(), free_port()
        daphne = [PY, "-m", "daphne", "-b", "127.0.0.1"]
        gw_proc = stack.start("gateway", [*daphne, "-p", str(gw_port), "-e",
                                f"tcp:port={control_port}:interface=127.0.0.1",
                                "chistone_site.asgi:application"],
                    {**env, "CHISTONE_CONTROL_PORT": str(control_port),
                     "CHISTONE_DATA_PORT": str(gw_port)}, server_core)
        pt_proc = stack.start("passthrough",
                              [*daphne, "-p", str(pt_port), "bench.passthrough:application"],
                              {**env, "BENCH_UPSTREAM": backend_url}, server_core)
        targets = {"gateway": f"http://127.0.0.1:{gw_port}{PATH}",
                   "passthrough": f"http://127.0.0.1:{pt_port}{PATH}"}
        pids = {"gateway": gw_proc.pid, "passthrough": pt_proc.pid}
        for url in targets.values():
            wait_http(url)

        def load(url: str, seconds: float) -> dict[str, float]:
            if shutil.which("wrk"):
                return wrk(url, seconds, args.connections, client_core)
            return python_load(url, seconds, args.connections)

        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for index in range(args.rounds):
            order = list(targets) if index % 2 == 0 else list(reversed(targets))
            for name in order:
                load(targets[name], args.warmup)
                cpu_before = cpu_seconds(pids[name])
                result = load(targets[name], args.duration)
                result["cpu_us"] = ((cpu_seconds(pids[name]) - cpu_before)
                                    / max(1, result["requests"]) * 1e6)
                rounds[name].append(result)
                print(f"round {index + 1} {name:12} {result['rps']:9.0f} req/s  "
                      f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                      f"cpu {result['cpu_us']:.0f} us/req  errors {result['errors']}",
                      flush=True)
        summary = {name: {key: statistics.median(r[key] for r in runs)
                          for key in ("rps", "p50_ms", "p99_ms", "cpu_us")} | {
                              "errors": sum(r["errors"] for r in runs)}
                   for name, runs in rounds.items()}
        # Rounds run back to back, so each round's pair saw about the same noise: the median
        # of the per-round ratios is the figure to trust; CPU per request is the cross-check.
        pair_ratios = [g["rps"] / p["rps"]
                       for g, p in zip(rounds["gateway"], rounds["passthrough"], strict=True)]
        ratio = statistics.median(pair_ratios)
        cpu_ratio = summary["passthrough"]["cpu_us"] / summary["gateway"]["cpu_us"]
        print()
        print(f"{'scenario':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us':>7} "
              f"{'errors':>7}")
        for name, row in summary.items():
            print(f"{name:12} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['cpu_us']:7.0f} {row['errors']:7d}")
        verdict = "meets" if ratio >= 0.85 else "misses"
        print(f"\ngateway / passthrough requests/s = {ratio:.3f} (median of per-round ratios "
              f"{', '.join(f'{r:.2f}' for r in pair_ratios)}; {verdict} the 0.85 target)")
        print(f"passthrough / gateway CPU per request = {cpu_ratio:.3f}")
        print(f"backend {backend_kind}, load {'wrk' if shutil.which('wrk') else 'python'}, "
              f"server core {server_core}, {args.rounds} rounds x {args.duration:.0f} s, "
              f"load average {os.getloadavg()[0]:.1f}")
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "gateway_vs_passthrough.json").write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "ratio": ratio, "pair_ratios": pair_ratios,
            "cpu_ratio": cpu_ratio, "summary": summary, "load_average": os.getloadavg(),
            "rounds": rounds, "backend": backend_kind, "connections": args.connections,
            "routes": args.routes, "duration_s": args.duration,
            "server_core": server_core}, indent=2))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
