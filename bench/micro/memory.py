"""Memory and cold load with many tenants (issue 8): RSS < 600 MiB, cold load < 10 s.

    .venv/bin/python bench/micro/memory.py [--tenants 1000] [--serve] [--db PATH] [--json PATH]

1. Seeds a temporary SQLite database through the services (bench/micro/support.py: every tenant
   has its own domain, one backend and an active 50-route script with one middleware), in a
   child process, so seeding leaves nothing behind in the measured process. `--db PATH` reuses
   (or creates, if missing) a seeded database instead.
2. In a fresh child process: imports the ASGI application as a worker does
   (chistone_site.asgi), reads its RSS, then times the data plane's first snapshot build
   (`routing.snapshot.holder.rebuild()`: every tenant's script loaded into its own Lua runtime)
   and reads the RSS again. Prints the cold-load time, the RSS (and its peak), the Lua memory
   the scripts hold, and the RSS per tenant.
3. With `--serve`, also starts `manage.py serve --workers 1` on free loopback ports against
   that database, times it until `/readyz` answers 200, checks one tenant answers (its backend
   is not running: a 502 is the expected answer), and reads the worker's RSS from /proc.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

RSS_TARGET_MIB = 600
LOAD_TARGET_S = 10.0
MiB = 1024 * 1024


def status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_child(mode: str, db: Path, *extra: str, timeout: float = 900) -> dict:
    done = subprocess.run([sys.executable, __file__, f"--child-{mode}", str(db), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"memory.py: the {mode} step failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- child processes -----------------------------------------------------------------------

def child_seed(db: Path, tenants: int) -> dict:
    from bench.micro import support

    support.use_temp_database(db.parent, db.name)
    started = time.perf_counter()
    support.migrate()
    support.seed_tenants(tenants)
    return {"seeded": tenants, "seconds": round(time.perf_counter() - started, 1)}


def child_load(db: Path) -> dict:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["CHISTONE_VAR_DIR"] = str(db.parent)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chistone_site.settings"
    import logging

    import chistone_site.asgi  # noqa: F401  (what a worker imports: Django, both planes)
    from routing.snapshot import holder

    logging.getLogger("chistone").setLevel(logging.WARNING)
    before = status_kib("self", "VmRSS")
    started = time.perf_counter()
    snapshot = holder.rebuild()
    seconds = time.perf_counter() - started
    assert snapshot is not None, holder.last_error
    after = status_kib("self", "VmRSS")
    peak = status_kib("self", "VmHWM")
    loaded = [t.script for t in snapshot.tenants.values() if t.script is not None]
    lua = sum(s.memory_used for s in loaded)
    return {"tenants": len(snapshot.tenants), "scripts": len(loaded),
            "unavailable": sum(1 for t in snapshot.tenants.values() if t.unavailable),
            "load_s": round(seconds, 2), "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "lua_mib": round(lua / MiB, 1),
            "rss_per_tenant_kib": round((after - before) / max(1, len(snapshot.tenants)), 1)}


# -- the real server -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, host: str = "127.0.0.1") -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path, headers={"Host": host})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def serve(db: Path, timeout: float) -> dict:
    from bench.micro import support

    data, control = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "CHISTONE_VAR_DIR": str(db.parent),
           "DJANGO_SETTINGS_MODULE": "chistone_site.settings"}
    log = db.parent / "serve.log"
    argv = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--data-port",
            str(data), "--control-port", str(control), "--workers", "1"]
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    result: dict = {"command": " ".join(argv[1:])}
    try:
        ready = None
        while time.perf_counter() - started < timeout and proc.poll() is None:
            if get(data, "/readyz") == 200:
                ready = time.perf_counter() - started
                break
            time.sleep(0.1)
        if ready is None:
            tail = log.read_text(errors="replace")[-1500:]
            result["error"] = (f"not ready within {timeout:g} s" if proc.poll() is None
                               else f"serve exited with {proc.returncode}") + f"; log: {tail}"
            return result
        result["ready_s"] = round(ready, 2)
        result["tenant_status"] = get(data, support.bench_request_path(), support.domain(999))
        time.sleep(1.0)
        workers = children(proc.pid)
        result["supervisor_rss_mib"] = round((status_kib(proc.pid, "VmRSS") or 0) / 1024, 1)
        result["worker_rss_mib"] = [round((status_kib(w, "VmRSS") or 0) / 1024, 1)
                                    for w in workers]
        restarts = log.read_text(errors="replace").count("started worker")
        result["workers_started"] = restarts
        return result
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1].startswith("--child-"):
        mode, db = sys.argv[1][len("--child-"):], Path(sys.argv[2])
        out = child_seed(db, int(sys.argv[3])) if mode == "seed" else child_load(db)
        print(json.dumps(out))
        return 0
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description="RSS and cold-load time with many tenants.")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--db", type=Path, help="a seeded database to reuse (made if missing)")
    parser.add_argument("--serve", action="store_true",
                        help="also start `manage.py serve --workers 1` and read its worker's RSS")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    tmp = None
    if args.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="chistone-memory-"))
        db = tmp / "bench.sqlite3"
    else:
        db = args.db.resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        report: dict = {"tenants": args.tenants}
        if not db.exists():
            print(f"seeding {args.tenants} tenants through the services ...", file=sys.stderr)
            report["seed"] = run_child("seed", db, str(args.tenants))
            print(f"  done in {report['seed']['seconds']} s", file=sys.stderr)
        print("cold load in a fresh process ...", file=sys.stderr)
        load = report["load"] = run_child("load", db)
        rss_ok = load["rss_after_mib"] < RSS_TARGET_MIB
        load_ok = load["load_s"] < LOAD_TARGET_S
        print(f"tenants loaded:     {load['tenants']} ({load['scripts']} scripts, "
              f"{load['unavailable']} unavailable)")
        print(f"cold load:          {load['load_s']:.2f} s  "
              f"[{'PASS' if load_ok else 'FAIL'}: target < {LOAD_TARGET_S:g} s]")
        print(f"RSS after load:     {load['rss_after_mib']:.0f} MiB  "
              f"[{'PASS' if rss_ok else 'FAIL'}: target < {RSS_TARGET_MIB} MiB]  "
              f"(before {load['rss_before_mib']:.0f} MiB, peak {load['rss_peak_mib']:.0f} MiB, "
              f"{load['rss_per_tenant_kib']:.0f} KiB per tenant, Lua states "
              f"{load['lua_mib']:.0f} MiB)")
        if args.serve:
            print("manage.py serve --workers 1 ...", file=sys.stderr)
            srv = report["serve"] = serve(db, args.ready_timeout)
            if "error" in srv:
                print(f"serve:              FAILED: {srv['error']}")
            else:
                print(f"serve:              ready in {srv['ready_s']:.2f} s (process start to "
                      f"/readyz 200), worker RSS {srv['worker_rss_mib']} MiB, supervisor "
                      f"{srv['supervisor_rss_mib']:.0f} MiB, tenant t999 answered "
                      f"{srv['tenant_status']}, workers started: {srv['workers_started']}")
        report["targets"] = {"rss_lt_600_mib": rss_ok, "cold_load_lt_10_s": load_ok}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
