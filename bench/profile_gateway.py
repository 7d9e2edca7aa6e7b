"""Profile the gateway scenario (bench/run.py scenario 6) with py-spy and sum the costs.

    .venv/bin/python bench/profile_gateway.py [--duration 20] [--rate 250] [--out DIR]
                                              [--scenario chistone|chistone_uvicorn]

Starts what `bench/run.py --only chistone` starts (the nginx backend, a fresh migrated and
seeded SQLite database, `manage.py serve`: daphne, one worker, the 50-route script), pinned the
same way, warms it up with wrk, then records the worker with `py-spy record` while wrk runs
the same load, and writes to DIR (default bench/out/profile):

- `gateway.folded`: the collapsed stacks (open with speedscope or flamegraph.pl);
- `gateway.svg`: py-spy's flame graph (a separate 5 s recording);
- `gateway.summary.txt`: where the worker's CPU samples went, by owner (see OWNERS), in % and
  in microseconds of CPU per request, plus the top functions by self time.

`--scenario passthrough` profiles scenario 4 the same way (files named `passthrough.*`), to
see what the gateway adds on top of the floor.

py-spy comes from `bench/install_tools.sh --profiler` (pip, into the venv); it needs ptrace
(root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run

# Who a CPU sample is charged to: walking its stack from the innermost frame outwards, the
# first frame that belongs to one of these owners decides. Standard-library frames (asyncio,
# json, logging, re, ...) own nothing: they are charged to whoever called them, so the asyncio
# task the gateway creates counts for the gateway, json.dumps in log_access for the access log,
# and a socket write under aiohttp for the upstream client. A sample with no owner on its stack
# is the event loop's own work. The frames that merely run the loop (the server's `run`, the
# reactor's `run`, the worker's `main`) sit under every sample and are never owners.
ROOT_FRAMES = ("Server.run (daphne/server.py", "AsyncioSelectorReactor.run (twisted/",
               "(chistone_site/workers/worker.py", "Server.run (uvicorn/server.py",
               "Server.serve (uvicorn/server.py", "(<frozen runpy>", "(uvicorn/main.py",
               "(daphne/cli.py", "asyncio/runners.py", "(uvicorn/_compat.py")
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("ASGI server: daphne + twisted (HTTP parsing, ASGI glue, transport)",
     ("(daphne/", "(twisted/")),
    ("ASGI server: uvicorn (httptools, uvloop)", ("(uvicorn/",)),
    ("upstream client: aiohttp (request building, connection pool, response parsing)",
     ("(aiohttp/", "(multidict/", "(yarl/", "routing/upstream.py")),
    ("upstream client: chistone's own (routing.upstream_h1, httptools)",
     ("(routing/upstream_h1.py", "(httptools/")),
    ("WebSocket gateway: routing.websocket", ("(routing/websocket.py",)),
    ("Lua step: luascripts.engine (match, Lua call, decode)", ("(luascripts/engine/",)),
    ("access log + counters: routing.stats (json, logging, write)", ("(routing/stats.py",)),
    ("request parsing: routing.request", ("(routing/request.py",)),
    ("resolve + plan + headers: routing.resolve/plan/headers",
     ("(routing/resolve.py", "(routing/plan.py", "(routing/headers.py")),
    ("gateway orchestration: routing.gateway/respond (tasks, disconnect watcher)",
     ("(routing/gateway.py", "(routing/respond.py")),
    ("planes + worker wrapper: chistone_site.planes, InflightCounter",
     ("(chistone_site/planes.py", "InflightCounter")),
    ("the passthrough application: bench/passthrough*.py", ("(bench/passthrough",)),
    ("Django / database (snapshot watcher, heartbeat)", ("(django/", "(tenants/",
                                                        "(chistone_site/workers/heartbeat")),
]
LOOP = "event loop: asyncio / uvloop, with no owner above on the stack"


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        if any(r in frame for r in ROOT_FRAMES) and "InflightCounter" not in frame:
            continue
        for owner, needles in OWNERS:
            if any(n in frame for n in needles):
                return owner
    return LOOP


def summarise(folded: Path, top: int = 25, *, rate: int | None = None,
              requests: int | None = None) -> str:
    """Shares of the CPU samples by owner and by function; with `rate` and `requests`, also
    microseconds of CPU per request (samples / rate / requests: py-spy leaves idle samples
    out, so this approximates on-CPU time)."""
    layers: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        total += n
        layers[classify(frames)] += n
        self_time[frames[-1] if frames else "?"] += n
    out = [f"{total} samples (CPU, idle excluded)", "",
           "by owner (the innermost frame of a library or chistone module on the stack; the "
           "standard library is charged to its caller):"]
    per = 1e6 / rate / requests if rate and requests else None
    for layer, n in layers.most_common():
        us = f"  {n * per:6.0f} us/req" if per else ""
        out.append(f"  {100 * n / total:5.1f}%{us}  {layer}")
    if per:
        out.append(f"  100.0%  {total * per:6.0f} us/req  (all)")
    out += ["", f"top {top} functions by self time:"]
    for frame, n in self_time.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


def find_pyspy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def worker_pid(supervisor: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = run.process_tree([supervisor]) - {supervisor}
        workers = [p for p in kids if "chistone_site.workers.worker" in
                   Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()]
        if workers:
            return min(workers)
        time.sleep(0.2)
    raise SystemExit("profile_gateway: no worker process found under the supervisor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds recorded (20)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scenario", default="chistone",
                        choices=("chistone", "chistone_uvicorn", "passthrough",
                                 "passthrough_h1_uvicorn"),
                        help="what to profile: scenario 6 (default), 8, or 4 for comparison")
    parser.add_argument("--out", type=Path, default=run.BENCH / "out" / "profile")
    args = parser.parse_args()

    pyspy = find_pyspy()
    if pyspy is None:
        raise SystemExit("profile_gateway: py-spy not found; run bench/install_tools.sh "
                         "--profiler")
    tools = run.Tools.detect()
    if not tools.wrk:
        raise SystemExit("profile_gateway: wrk not found; run bench/install_tools.sh")
    pinning = run.plan_pinning(sorted(os.sched_getaffinity(0)), bool(tools.taskset))
    workdir = Path(tempfile.mkdtemp(prefix="chistone-profile-"))
    harness = run.Harness(tools=tools, pinning=pinning, workdir=workdir,
                          duration=args.duration, warmup=args.warmup,
                          connections=args.connections)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gateway" if args.scenario == "chistone" else args.scenario
    folded, svg = args.out / f"{name}.folded", args.out / f"{name}.svg"
    try:
        server = harness.start_scenario(args.scenario)
        pid = server.roots[0] if args.scenario.startswith("passthrough") \
            else worker_pid(server.roots[0])
        print(f"profiling worker {pid} ({args.scenario}); {pinning.note}", file=sys.stderr)
        harness.wrk(server.port, args.warmup)
        record = [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate),
                  "--nolineno", "--duration", str(args.duration + 1), "--nonblocking"]
        spy_raw = subprocess.Popen([*record, "--format", "raw", "--output", str(folded)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        numbers = harness.wrk(server.port, args.duration)
        out, _ = spy_raw.communicate(timeout=args.duration + 60)
        if spy_raw.returncode != 0 or not folded.exists():
            raise SystemExit(f"profile_gateway: py-spy failed: {out.decode()[-800:]}")
        print(f"under py-spy: {numbers['rps']:,.0f} req/s, p99 {numbers['p99_ms']:.1f} ms, "
              f"errors {sum(numbers['errors'].values())}", file=sys.stderr)
        # A short second recording for the flame graph (py-spy writes one format per run).
        spy_svg = subprocess.Popen([*record[:-3], "--duration", "5", "--nonblocking",
                                    "--format", "flamegraph", "--output", str(svg)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        harness.wrk(server.port, 5)
        spy_svg.wait(timeout=60)
    finally:
        harness.procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = (f"scenario {args.scenario}, {args.duration} s at {numbers['rps']:,.0f} req/s "
               f"under py-spy ({args.rate} Hz, --nonblocking)\n\n"
               + summarise(folded, rate=args.rate, requests=numbers["requests"]))
    (args.out / f"{name}.summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"\nwritten: {folded}, {svg}, {args.out / f'{name}.summary.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
