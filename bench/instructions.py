"""Instructions per proxied request, counted by valgrind's callgrind: an A/B measure that does
not move with the machine's load.

    .venv/bin/python bench/instructions.py [--requests 2000] [--uvicorn [--chain]]
                                           [--app gateway|passthrough]

CPU time per request moves by 10% to 15% between runs on a shared two-core machine, more than
most single changes to the per-request path are worth. The number of instructions the
process executes per request does not: the same code gives the same count within about 0.1%
in-process, and within about 1% under uvicorn measured for 20 s or more (the loop's batching
follows the load). Compare two commits by running this from each tree; a change that removes
work removes instructions. Instructions are not time (a cache miss costs more than an add),
so quote CPU time from bench/run.py for the targets, and this for what a change removed.

What runs: the nginx backend of bench/app_cpu.py, the same gateway and 50-route script (or
chistone's passthrough on the same client, `--app passthrough`), warmed up, then collection
switched on (`callgrind_control -i on`) around the measured requests only:

- default: requests driven in-process through the ASGI application (no server, the stock
  asyncio loop), 50 at a time, as bench/app_cpu.py does;
- `--uvicorn`: a real uvicorn (httptools, uvloop) in this process serving the application,
  wrk as the client for `--seconds`; `--chain` adds what a worker puts around the gateway
  (the server adapter, the in-flight counter, the plane router).

Needs valgrind (`apt-get install valgrind`) and, for `--uvicorn`, wrk. Runs about 50 times
slower than natively: 2,000 requests take about half a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000,
                        help="measured requests in-process (default 2000)")
    parser.add_argument("--uvicorn", action="store_true",
                        help="serve with uvicorn in this process, wrk as the client")
    parser.add_argument("--seconds", type=int, default=20,
                        help="measured wrk seconds with --uvicorn (default 20)")
    parser.add_argument("--chain", action="store_true",
                        help="with --uvicorn: the worker's wrappers around the gateway")
    parser.add_argument("--app", choices=("gateway", "passthrough"), default="gateway")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # under valgrind
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> int:
    """Run this script again under callgrind and report instructions per request."""
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.uvicorn and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (bench/install_tools.sh)")
    with tempfile.TemporaryDirectory(prefix="chistone-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [valgrind, "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, __file__, *sys.argv[1:],
             "--child"], capture_output=True, text=True)
        counted = re.search(r"REQUESTS (\d+)", done.stdout)
        if done.returncode != 0 or counted is None or not out.exists():
            raise SystemExit(f"the measured run failed:\n{done.stdout[-2000:]}"
                             f"{done.stderr[-3000:]}")
        summary = re.search(r"^totals: (\d+)", out.read_text(errors="replace"), re.MULTILINE)
        if summary is None:
            raise SystemExit(f"no instruction total in {out}")
        requests = int(counted.group(1))
        total = int(summary.group(1))
    where = ("uvicorn" + (", worker chain" if args.chain else "")) if args.uvicorn \
        else "in-process"
    print(f"{args.app} ({where}): {requests} requests, {total:,} instructions, "
          f"{total / requests:,.0f} per request")
    return 0


def _collect(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   capture_output=True, check=False)


def child(args: argparse.Namespace) -> None:
    """The measured process (under valgrind)."""
    from bench import app_cpu
    from routing import stats

    workdir = Path(tempfile.mkdtemp(prefix="chistone-instructions-"))
    backend, port = app_cpu.start_backend(workdir, None, "auto")
    try:
        if args.app == "gateway":
            app = app_cpu.gateway_app(port)
            logging.getLogger("chistone.access").handlers[:] = []
        else:
            from bench.passthrough_h1 import PassthroughH1

            app = PassthroughH1(f"http://127.0.0.1:{port}")
        from chistone_site.planes import settle_heap

        async def in_process() -> int:
            await app_cpu.drive(app, port, 3000, 50)
            settle_heap()
            _collect(True)
            await app_cpu.drive(app, port, args.requests, 50)
            _collect(False)
            return args.requests

        async def under_uvicorn() -> int:
            import uvicorn

            from bench.run import REQUEST_HEADERS, REQUEST_PATH, free_port

            served = app
            if args.chain and args.app == "gateway":
                from chistone_site.planes import DataPlane, PlaneRouter
                from chistone_site.servers import adapt
                from chistone_site.workers.worker import InflightCounter

                plane = DataPlane(holder=app.holder, transport=app.transport,
                                  watch_generation=False)
                plane.gateway, plane.started = app, True
                served = adapt(InflightCounter(PlaneRouter(control_app=None, data_plane=plane,
                                                           control_port=1)), server="uvicorn")
            listen = free_port()
            server = uvicorn.Server(uvicorn.Config(
                served, host="127.0.0.1", port=listen, loop="none", http="httptools",
                lifespan="off", log_level="warning", access_log=False))
            serving = asyncio.get_running_loop().create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await asyncio.sleep(0.1)

            async def wrk(seconds: int) -> str:
                argv = ["wrk", "-t1", "-c20", f"-d{seconds}s"]
                for name, value in REQUEST_HEADERS:
                    argv += ["-H", f"{name}: {value}"]
                argv.append(f"http://127.0.0.1:{listen}{REQUEST_PATH}")
                proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
                out, _ = await proc.communicate()
                return out.decode()

            await wrk(8)
            settle_heap()
            _collect(True)
            out = await wrk(args.seconds)
            _collect(False)
            server.should_exit = True
            await serving
            if "Non-2xx" in out:
                raise SystemExit(f"errors while measuring:\n{out}")
            return int(re.search(r"(\d+) requests in", out).group(1))

        async def run() -> int:
            handler = stats.install_buffered_access_log()
            if handler is not None:
                handler.stream = app_cpu._Discard()
            return await (under_uvicorn() if args.uvicorn else in_process())

        if args.uvicorn:
            import uvloop

            requests = uvloop.run(run())
        else:
            requests = asyncio.run(run())
        print(f"REQUESTS {requests}", flush=True)
    finally:
        backend.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
