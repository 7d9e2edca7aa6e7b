"""Benchmark chistone side by side with its anchors, in one run (issue 8).

    .venv/bin/python bench/run.py [--duration S] [--connections N] [--only a,b] [--json PATH]

Starts every server itself on loopback, pins the server under test to one core and wrk plus the
backend to another (when taskset and two cores are there), warms up, runs wrk (1 thread, N
connections, 8 request headers and a query string), and prints one table (requests/s, p50, p99,
server CPU per request, errors, ratio to chistone under daphne), the issue's target checks and a
JSON file. A scenario whose tools are missing, or whose server does not become ready in time, is
reported as skipped with the reason. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ANCHORS = BENCH / "anchors"
PYTHON = sys.executable
DEFAULT_JSON = BENCH / "out" / "results.json"
LUA_MODULE = Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")

DOMAIN = "bench.local"
ROUTES = 50
# Route 40 of 50: the Lua anchors match routes in order, so most of the table is walked.
REQUEST_PATH = "/api/v1/svc40/items/12345?page=2&limit=10&sort=desc"
REQUEST_HEADERS = (
    ("Host", DOMAIN),
    ("User-Agent", "chistone-bench/1.0 (wrk)"),
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("X-Request-Id", "4f9c2b1e-7d3a-4c55-9e0b-bench"),
    ("Authorization", "Bearer bench-token-0123456789abcdef"),
    ("Cookie", "session=abc123def456; theme=dark"),
)
REFERENCE = "chistone"  # the ratio column is requests/s divided by this scenario's


@dataclass(frozen=True)
class Scenario:
    id: int
    key: str
    title: str
    needs: tuple[str, ...] = ("wrk",)


SCENARIOS = (
    Scenario(1, "backend", "backend alone"),
    Scenario(2, "proxy_pass", "nginx proxy_pass, keep-alive upstream", ("wrk", "nginx")),
    Scenario(3, "nginx_lua", "nginx + Lua routing decision, then proxy", ("wrk", "nginx", "lua")),
    Scenario(4, "passthrough", "bare passthrough ASGI proxy, aiohttp, daphne"),
    Scenario(5, "two_service", "two-service design (HTTP Lua decision service)"),
    Scenario(6, "chistone", "chistone, daphne, 1 worker"),
    Scenario(7, "chistone_workers2", "chistone, daphne, --workers 2"),
    Scenario(8, "chistone_uvicorn", "chistone, uvicorn, 1 worker"),
    # Not a target: the same as 7 on one shared socket, to show what SO_REUSEPORT changes.
    Scenario(9, "chistone_workers2_shared", "chistone, daphne, --workers 2 --listen shared"),
    # Anchors for the fastest chistone (issue 18): the same passthrough on uvicorn, and on
    # chistone's own upstream client (routing.upstream_h1) under uvicorn and under daphne.
    Scenario(10, "passthrough_uvicorn", "bare passthrough ASGI proxy, aiohttp, uvicorn"),
    Scenario(11, "passthrough_h1_uvicorn", "bare passthrough, chistone's client, uvicorn"),
    Scenario(12, "passthrough_h1", "bare passthrough, chistone's client, daphne"),
    # Issue 15: scenario 6's script behind middleware.rate_limit on Redis (a redis-server of
    # the run's own, on the backend's core); every request passes, each is a round trip.
    Scenario(13, "chistone_ratelimit", "chistone, daphne, 1 worker, rate limit on Redis",
             ("wrk", "redis")),
)
BY_KEY = {s.key: s for s in SCENARIOS}

# (numerator, denominator, minimum ratio, label): the targets of issue 8, from the same run.
TARGETS = (
    ("chistone", "passthrough", 0.85, "chistone (daphne) >= 0.85x bare daphne passthrough [6/4]"),
    ("chistone", "two_service", 2.0, "chistone >= 2.0x the two-service design [6/5]"),
    ("chistone_workers2", "chistone", 1.7, "--workers 2 >= 1.7x one worker [7/6]"),
    ("chistone_uvicorn", "chistone", 1.8, "uvicorn >= 1.8x daphne [8/6]"),
)
# (numerator, denominator, maximum ratio of CPU per request, label): issue 18's targets.
CPU_TARGETS = (
    ("chistone", "passthrough", 1.10,
     "chistone (daphne) CPU/req <= 1.10x bare daphne passthrough [6/4] (issue 18)"),
    ("chistone_uvicorn", "nginx_lua", 10.0,
     "chistone (uvicorn, the fastest server) CPU/req <= 10x nginx + Lua [8/3] (issue 18)"),
    ("chistone_uvicorn", "passthrough_h1_uvicorn", None,
     "chistone (uvicorn) CPU/req vs the passthrough on the same server and client [8/11]"),
    ("chistone_ratelimit", "chistone", 1.25,
     "middleware.rate_limit on Redis: CPU/req <= 1.25x the same script without it [13/6] "
     "(issue 15)"),
)


class Skip(Exception):
    """The scenario cannot run here (missing tool, server not ready): reported as skipped."""


# -- results -----------------------------------------------------------------------------------

@dataclass
class Result:
    id: int
    key: str
    title: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    note: str = ""
    requests: int | None = None
    seconds: float | None = None
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_request: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    ratio: float | None = None
    rounds: list[float] = field(default_factory=list)  # requests/s of each measured round
    # With several chistone workers: each worker's share of the server CPU, per measured round
    # ("95%/5%"), i.e. how evenly the connections were spread over the workers.
    worker_cpu: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # e.g. a worker replaced mid-run

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _median(values: list[float]) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def combine(rounds: list[Result]) -> Result:
    """One row from a scenario's rounds: per-metric medians of the measured rounds, errors summed.

    With no measured round, the first round's skip or failure stands.
    """
    measured = [r for r in rounds if r.ok]
    if len(rounds) == 1 or not measured:
        return rounds[0]
    first = measured[0]
    out = Result(first.id, first.key, first.title, note=first.note)

    def med(name: str) -> float | None:
        values = [getattr(r, name) for r in measured if getattr(r, name) is not None]
        return _median(values) if values else None

    out.rps, out.p50_ms, out.p99_ms = med("rps"), med("p50_ms"), med("p99_ms")
    out.cpu_us_per_request = med("cpu_us_per_request")
    out.requests = sum(r.requests or 0 for r in measured)
    out.seconds = sum(r.seconds or 0 for r in measured)
    for r in measured:
        for name, count in r.errors.items():
            out.errors[name] = out.errors.get(name, 0) + count
    out.rounds = [r.rps for r in measured]
    out.worker_cpu = [split for r in measured for split in r.worker_cpu]
    out.events = [f"round {i}: {event}" for i, r in enumerate(rounds, 1) if r.ok
                  for event in r.events]
    if len(measured) < len(rounds):
        out.reason = "; ".join(f"round {i}: {r.status}: {r.reason}"
                               for i, r in enumerate(rounds, 1) if not r.ok)
        out.note = ", ".join(filter(None, [out.note, f"{len(measured)} of {len(rounds)} rounds"]))
    return out


def add_ratios(results: Iterable[Result], reference: str = REFERENCE) -> None:
    results = list(results)
    ref = next((r for r in results if r.key == reference and r.ok and r.rps), None)
    for r in results:
        r.ratio = r.rps / ref.rps if ref is not None and r.ok and r.rps is not None else None


def check_targets(results: Iterable[Result]) -> list[dict]:
    """PASS / FAIL / N/A for each target of issue 8, plus "no errors" and "p99 everywhere"."""
    results = list(results)
    by_key = {r.key: r for r in results}
    checks = []
    for num, den, minimum, label in TARGETS:
        a, b = by_key.get(num), by_key.get(den)
        missing = [k for k, r in ((num, a), (den, b)) if r is None or not r.ok or not r.rps]
        if missing:
            why = ", ".join(f"{BY_KEY[k].id} {by_key[k].status if k in by_key else 'not run'}"
                            for k in missing)
            checks.append({"target": label, "status": "N/A", "value": None,
                           "minimum": minimum, "detail": f"scenario {why}"})
            continue
        value = a.rps / b.rps
        checks.append({"target": label, "status": "PASS" if value >= minimum else "FAIL",
                       "value": round(value, 3), "minimum": minimum,
                       "detail": f"{value:.2f}x"})
    for num, den, maximum, label in CPU_TARGETS:
        a, b = by_key.get(num), by_key.get(den)
        if a is None or b is None or not a.ok or not b.ok or not a.cpu_us_per_request \
                or not b.cpu_us_per_request:
            checks.append({"target": label, "status": "N/A", "value": None,
                           "maximum": maximum, "detail": "a side was not measured"})
            continue
        value = a.cpu_us_per_request / b.cpu_us_per_request
        status = "INFO" if maximum is None else ("PASS" if value <= maximum else "FAIL")
        checks.append({"target": label, "status": status, "value": round(value, 3),
                       "maximum": maximum,
                       "detail": f"{value:.2f}x ({a.cpu_us_per_request:.0f}/"
                                 f"{b.cpu_us_per_request:.0f} us)"})
    measured = [r for r in results if r.ok]
    with_errors = [r for r in measured if r.error_count]
    checks.append({
        "target": "no errors in any scenario",
        "status": "N/A" if not measured else ("FAIL" if with_errors else "PASS"),
        "value": sum(r.error_count for r in measured), "minimum": None,
        "detail": "; ".join(f"{r.id} {r.key}: {r.errors}" for r in with_errors)
        or f"{len(measured)} scenario(s) measured",
    })
    unreported = [r for r in results if r.p99_ms is None]
    checks.append({
        "target": "p99 reported for every scenario",
        "status": "N/A" if not results else ("FAIL" if unreported else "PASS"),
        "value": len(results) - len(unreported), "minimum": None,
        "detail": ", ".join(f"{r.id} {r.status}" for r in unreported)
        or f"{len(results)} of {len(results)}",
    })
    return checks


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def format_table(results: Iterable[Result], *, markdown: bool = False) -> str:
    header = ("#", "scenario", "requests/s", "p50 ms", "p99 ms", "CPU us/req", "errors",
              "vs chistone")
    rows = []
    for r in results:
        if r.ok:
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "n/a"
            note = ", ".join(filter(None, [
                r.note, "worker CPU " + ", ".join(r.worker_cpu) if r.worker_cpu else "",
                *r.events]))
            title = f"{r.title} ({note})" if note else r.title
            rows.append((str(r.id), title, _num(r.rps, 0), _ms(r.p50_ms), _ms(r.p99_ms),
                         _num(r.cpu_us_per_request, 0), str(r.error_count), ratio))
        else:
            reason = r.reason if len(r.reason) <= 160 else r.reason[:157] + "..."
            rows.append((str(r.id), f"{r.title}: {r.status}: {reason}", "-", "-", "-", "-", "-",
                         "-"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|---|---|" + "---:|" * (len(header) - 2)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    numeric = [row for row, r in zip(rows, results, strict=True) if r.ok]
    widths = [max([len(header[i])] + [len(row[i]) for row in numeric] + [0])
              for i in range(len(header))]
    widths[1] = max([len(header[1])] + [len(row[1]) for row in numeric])

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(widths[i + 2]) for i, cell in enumerate(row[2:])]
        return "  ".join(cells).rstrip()

    out = [line(header)]
    for row, r in zip(rows, results, strict=True):
        out.append(line(row) if r.ok else f"{row[0].rjust(widths[0])}  {row[1]}")
    return "\n".join(out)


def format_targets(checks: Iterable[dict]) -> str:
    return "\n".join(f"{c['status']:4}  {c['target']}  ({c['detail']})" for c in checks)


# -- wrk -------------------------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def duration_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """requests, seconds, rps, p50_ms, p99_ms and errors from `wrk --latency` output."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", output, re.M)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", output, re.M)
    if not (rps and total and p50 and p99):
        raise ValueError("could not parse wrk output:\n" + output[-800:])
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx": 0}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     output)
    if sock:
        for name, value in zip(("connect", "read", "write", "timeout"), sock.groups(),
                               strict=True):
            errors[name] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors["non_2xx"] = int(non2xx.group(1))
    return {
        "requests": int(total.group(1)),
        "seconds": duration_ms(total.group(2)) / 1e3,
        "rps": float(rps.group(1)),
        "p50_ms": duration_ms(p50.group(1)),
        "p99_ms": duration_ms(p99.group(1)),
        "errors": errors,
    }


# -- processes, pinning, CPU -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> bool:
    """Whether the redis-server `proc` on `port` answers PING before `seconds` pass."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def process_tree(roots: Iterable[int]) -> set[int]:
    """The given pids and all their live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid for pid in roots if Path(f"/proc/{pid}").exists()]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given processes (those still alive), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def chistone_workers(pids: Iterable[int]) -> list[int]:
    """The chistone worker processes among `pids` (their command line names the module)."""
    found = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"chistone_site.workers.worker" in cmdline:
            found.append(pid)
    return found


def supervisor_lines(log: Path, count: int = 3) -> str:
    """The last lines of a chistone log that are about workers (not access-log lines).

    chistone logs one JSON object per line (`ts`, `level`, `logger`, `msg`, maybe `exc`);
    plain-text lines (CHISTONE_LOG_FORMAT=plain, tracebacks printed by Python) count as they are.
    """
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = []
    for line in lines:
        text = line.strip()
        if text.startswith("{"):
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if not isinstance(entry, dict) or "msg" not in entry:
                continue  # an access-log line has no msg
            text = f"{entry.get('level', '')} {entry.get('logger', '')} {entry['msg']}"
            if entry.get("exc"):
                text += " | " + str(entry["exc"]).strip().splitlines()[-1]
        elif "chistone.access" in text:
            continue
        if re.search(r"worker|watchdog|supervisor|Traceback|Error", text):
            found.append(text)
    return " | ".join(found[-count:])


@dataclass(frozen=True)
class Pinning:
    client: tuple[int, ...] = ()  # wrk and the shared backend
    server: tuple[int, ...] = ()  # the server under test
    server_two: tuple[int, ...] = ()  # the server under test with two workers
    note: str = "not pinned"

    @property
    def shared_two(self) -> bool:
        return bool(set(self.server_two) & set(self.client))


def plan_pinning(cpus: list[int], taskset: bool) -> Pinning:
    if not taskset:
        return Pinning(note="not pinned: taskset not found")
    if len(cpus) < 2:
        return Pinning(note=f"not pinned: only {len(cpus)} usable core")
    client, server = (cpus[0],), (cpus[1],)
    server_two = tuple(cpus[1:3]) if len(cpus) >= 3 else tuple(cpus[:2])
    return Pinning(client=client, server=server, server_two=server_two,
                   note=f"server under test on core {server[0]}, wrk and backend on core "
                        f"{client[0]}; two workers on cores {','.join(map(str, server_two))}")


def tail(path: Path, chars: int = 600) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-chars:].splitlines() if line.strip())


class Processes:
    """Processes this harness started; each in its own session so its whole tree can stop."""

    def __init__(self, logdir: Path, taskset: str | None) -> None:
        self.logdir = logdir
        self.taskset = taskset
        self.running: list[tuple[str, subprocess.Popen]] = []

    def pinned(self, argv: list[str], cpus: tuple[int, ...]) -> list[str]:
        if self.taskset and cpus:
            return [self.taskset, "-c", ",".join(map(str, cpus)), *argv]
        return argv

    def log(self, name: str) -> Path:
        return self.logdir / f"{name}.log"

    def start(self, name: str, argv: list[str], *, cpus: tuple[int, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.log(name), "wb") as log:
            proc = subprocess.Popen(self.pinned(argv, cpus), cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of its process group (workers of a supervisor, nginx workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=5)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.running)):
            self.stop(proc)


def wait_ready(port: int, *, procs: list[tuple[str, subprocess.Popen, Path]], timeout: float,
               path: str = REQUEST_PATH, what: str = "server") -> None:
    """Until GET `path` answers 200; Skip if a process exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        for name, proc, log in procs:
            if proc.poll() is not None:
                raise Skip(f"{name} exited with code {proc.returncode} before becoming ready: "
                           f"{tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers=dict(REQUEST_HEADERS))
            response = conn.getresponse()
            body = response.read(300)
            if response.status == 200:
                return
            last = f"HTTP {response.status} {body[:160]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            logs = " // ".join(f"{name}: {tail(log, 300)}" for name, _p, log in procs)
            raise Skip(f"{what} not ready within {timeout:g} s (last probe: {last}); {logs}")
        time.sleep(0.2)


# -- tools -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tools:
    wrk: str | None
    nginx: str | None
    lua: bool
    taskset: str | None

    @classmethod
    def detect(cls) -> Tools:
        nginx = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
            None)
        return cls(wrk=shutil.which("wrk"), nginx=nginx, lua=LUA_MODULE.exists(),
                   taskset=shutil.which("taskset"))

    def missing(self, needs: Iterable[str]) -> str | None:
        reasons = {
            "wrk": None if self.wrk else "wrk not installed (run bench/install_tools.sh)",
            "nginx": None if self.nginx else "nginx not installed (run bench/install_tools.sh)",
            "lua": None if self.lua else
            f"nginx Lua module not installed ({LUA_MODULE} missing; run bench/install_tools.sh)",
            "redis": None if shutil.which("redis-server") else
            "redis-server not installed (apt-get install -y redis-server)",
        }
        return next((reasons[n] for n in needs if reasons.get(n)), None)


def install_tools() -> None:
    script = BENCH / "install_tools.sh"
    try:
        done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=900)
        print((done.stdout + done.stderr).strip(), file=sys.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"install_tools: failed: {exc}", file=sys.stderr)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


# -- the harness -----------------------------------------------------------------------------

@dataclass
class Server:
    port: int
    roots: list[int]  # pids whose process trees are the server under test
    note: str = ""


class Harness:
    def __init__(self, *, tools: Tools, pinning: Pinning, workdir: Path, duration: float,
                 warmup: float, connections: int, backend: str = "auto",
                 ready_timeout: float = 30.0, two_service_server: str = "daphne",
                 keep: bool = False) -> None:
        self.tools = tools
        self.pinning = pinning
        self.workdir = workdir
        self.duration = duration
        self.warmup = warmup
        self.connections = connections
        self.backend_kind = ("nginx" if tools.nginx else "python") if backend == "auto" \
            else backend
        self.ready_timeout = ready_timeout
        self.two_service_server = two_service_server
        self.keep = keep
        self.procs = Processes(workdir, tools.taskset)
        self.backend_url: str | None = None
        self.backend_proc: subprocess.Popen | None = None
        self.chistone_env: dict[str, str] | None = None
        self.chistone_skip: str | None = None

    # -- helpers ---------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
                "PYTHONUNBUFFERED": "1", **extra}

    def start_nginx(self, name: str, template: str, port: int, cpus: tuple[int, ...],
                    **values: object) -> subprocess.Popen:
        if not self.tools.nginx:
            raise Skip("nginx not installed (run bench/install_tools.sh)")
        prefix = self.workdir / name
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        text = (ANCHORS / template).read_text()
        for key, value in {"PREFIX": prefix, "PORT": port, "ROUTES": ROUTES, **values}.items():
            text = text.replace(f"@{key}@", str(value))
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        argv = [self.tools.nginx, "-p", str(prefix), "-e", str(prefix / "error.log"),
                "-c", str(conf)]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise Skip(f"nginx -t refused {template}: "
                       + " | ".join((check.stdout + check.stderr).strip().splitlines()[-3:]))
        return self.procs.start(name, argv, cpus=cpus)

    def start_backend(self, name: str, cpus: tuple[int, ...]) -> tuple[subprocess.Popen, int]:
        port = free_port()
        if self.backend_kind == "nginx":
            proc = self.start_nginx(name, "backend.nginx.conf", port, cpus)
        else:
            proc = self.procs.start(name, [PYTHON, str(ANCHORS / "backend.py"), "--port",
                                           str(port)], cpus=cpus, env=self.env())
        wait_ready(port, procs=[(name, proc, self.procs.log(name))], timeout=15,
                   what=f"{self.backend_kind} backend")
        return proc, port

    def asgi(self, name: str, app: str, port: int, cpus: tuple[int, ...], server: str,
             **env: str) -> subprocess.Popen:
        if server == "uvicorn":
            argv = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                    "--no-access-log", "--loop", "uvloop", "--http", "httptools", app]
        else:
            argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
        return self.procs.start(name, argv, cpus=cpus, env=self.env(**env))

    def ready(self, port: int, procs: list[tuple[str, subprocess.Popen]], what: str,
              timeout: float | None = None) -> None:
        wait_ready(port, procs=[(n, p, self.procs.log(n)) for n, p in procs],
                   timeout=timeout or self.ready_timeout, what=what)

    def ensure_backend(self) -> str:
        if self.backend_url is None:
            self.backend_proc, port = self.start_backend("backend", self.pinning.client)
            self.backend_url = f"http://127.0.0.1:{port}"
        return self.backend_url

    # -- scenarios -------------------------------------------------------------------------
    def start_scenario(self, key: str) -> Server:
        cpus = self.pinning.server
        if key == "backend":
            proc, port = self.start_backend("backend-alone", cpus)
            return Server(port, [proc.pid])
        backend_url = self.ensure_backend()
        backend_port = backend_url.rsplit(":", 1)[1]
        port = free_port()
        if key in ("proxy_pass", "nginx_lua"):
            template = "proxy.nginx.conf" if key == "proxy_pass" else "lua.nginx.conf"
            proc = self.start_nginx(key, template, port, cpus, BACKEND_PORT=backend_port)
            self.ready(port, [(key, proc)], f"nginx ({template})", timeout=15)
            return Server(port, [proc.pid])
        if key.startswith("passthrough"):
            app = ("bench.passthrough_h1:application" if "_h1" in key
                   else "bench.passthrough:application")
            server = "uvicorn" if key.endswith("_uvicorn") else "daphne"
            proc = self.asgi(key, app, port, cpus, server, BENCH_UPSTREAM=backend_url)
            self.ready(port, [(key, proc)], f"{server} passthrough ({app})")
            return Server(port, [proc.pid])
        if key == "two_service":
            decision_port = free_port()
            server = self.two_service_server
            decision = self.asgi("decision", "bench.anchors.two_service:decision",
                                 decision_port, cpus, server, BENCH_ROUTES=str(ROUTES))
            gateway = self.asgi("gateway", "bench.anchors.two_service:gateway", port, cpus,
                                server, BENCH_BACKENDS=f"backend={backend_url}",
                                BENCH_DECISION_URL=f"http://127.0.0.1:{decision_port}/decide")
            self.ready(port, [("decision", decision), ("gateway", gateway)],
                       f"two-service ({server})")
            return Server(port, [decision.pid, gateway.pid], note=server)
        if key.startswith("chistone"):
            return self.start_chistone(key, port)
        raise ValueError(f"unknown scenario {key!r}")

    def prepare_chistone(self) -> dict[str, str]:
        """Migrate a fresh SQLite database and seed the bench tenant, once for 6 to 8."""
        if self.chistone_skip:
            raise Skip(self.chistone_skip)
        if self.chistone_env is not None:
            return self.chistone_env
        db = self.workdir / "bench.sqlite3"
        env = self.env(DATABASE_URL=f"sqlite:///{db}", CHISTONE_VAR_DIR=str(self.workdir),
                       DJANGO_SETTINGS_MODULE="chistone_site.settings")
        steps = (
            ("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], 300),
            ("seed", [PYTHON, str(BENCH / "seed.py"), "--backend-url", self.ensure_backend(),
                      "--domain", DOMAIN, "--routes", str(ROUTES)], 120),
        )
        for name, argv, timeout in steps:
            try:
                done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                self.chistone_skip = f"{name} did not finish within {timeout} s"
                raise Skip(self.chistone_skip) from None
            if done.returncode != 0:
                log = self.workdir / f"{name}.log"
                log.write_text(done.stdout + done.stderr)
                lines = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
                where = str(log) if self.keep else "rerun with --keep for the full output"
                self.chistone_skip = (f"`{name}` failed (exit {done.returncode}): "
                                      f"{lines[-1].strip()} ({where})")
                raise Skip(self.chistone_skip)
        self.chistone_env = env
        return env

    def prepare_ratelimit(self) -> dict[str, str]:
        """Scenario 13: its own database (the same tenant behind middleware.rate_limit) and
        a redis-server without persistence, pinned with the backend."""
        if getattr(self, "ratelimit_env", None) is not None:
            return self.ratelimit_env
        base = self.prepare_chistone()
        redis_port = free_port()
        redis = self.procs.start("redis", [shutil.which("redis-server") or "redis-server",
                                           "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no",
                                           "--dir", str(self.workdir)],
                                 cpus=self.pinning.client)
        if not redis_answers(redis_port, redis):
            raise Skip("redis-server did not start")
        db = self.workdir / "bench-ratelimit.sqlite3"
        env = {**base, "DATABASE_URL": f"sqlite:///{db}",
               "CHISTONE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        for argv in ([PYTHON, "manage.py", "migrate", "--noinput"],
                     [PYTHON, str(BENCH / "seed.py"), "--backend-url", self.ensure_backend(),
                      "--domain", DOMAIN, "--routes", str(ROUTES), "--rate-limit"]):
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                raise Skip(f"`{argv[1]}` failed for scenario 13: "
                           f"{(done.stdout + done.stderr).strip()[-300:]}")
        self.ratelimit_env = env
        return env

    def start_chistone(self, key: str, port: int) -> Server:
        env = self.prepare_ratelimit() if key == "chistone_ratelimit" else \
            self.prepare_chistone()
        control = free_port()
        argv = [PYTHON, "manage.py", "serve", "--host", "127.0.0.1", "--data-port", str(port),
                "--control-port", str(control)]
        # Always explicit: serve's defaults (one worker per core, CHISTONE_SERVER) must not
        # change what a scenario measures.
        workers = 2 if key.startswith("chistone_workers2") else 1
        server = "uvicorn" if key == "chistone_uvicorn" else "daphne"
        listen = "shared" if key == "chistone_workers2_shared" else "reuseport"
        argv += ["--workers", str(workers), "--server", server, "--listen", listen]
        cpus, note = self.pinning.server, ""
        if workers == 2:
            cpus = self.pinning.server_two
            if self.pinning.shared_two:
                note = "2 workers share a core with wrk and the backend"
        proc = self.procs.start(key, argv, cpus=cpus, env=env)
        self.ready(port, [(key, proc)], f"`{' '.join(argv[1:3] + argv[9:])}`")
        return Server(port, [proc.pid], note=note)

    # -- measuring -------------------------------------------------------------------------
    def wrk(self, port: int, seconds: float) -> dict:
        argv = [self.tools.wrk, "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
                "--latency"]
        for name, value in REQUEST_HEADERS:
            argv += ["-H", f"{name}: {value}"]
        argv.append(f"http://127.0.0.1:{port}{REQUEST_PATH}")
        argv = self.procs.pinned(argv, self.pinning.client)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
        return parse_wrk(done.stdout)

    def measure(self, scenario: Scenario) -> Result:
        result = Result(scenario.id, scenario.key, scenario.title)
        missing = self.tools.missing(scenario.needs)
        if missing:
            result.status, result.reason = "skipped", missing
            return result
        started = len(self.procs.running)
        try:
            server = self.start_scenario(scenario.key)
            result.note = server.note
            if self.warmup > 0:
                self.wrk(server.port, self.warmup)
            pids = process_tree(server.roots)
            before = cpu_seconds(pids)
            workers = {pid: cpu_seconds([pid]) for pid in chistone_workers(pids)}
            numbers = self.wrk(server.port, self.duration)
            after = process_tree(server.roots)
            used = cpu_seconds(pids | after) - before
            now = set(chistone_workers(after))
            gone, new = sorted(set(workers) - now), sorted(now - set(workers))
            if gone or new:  # the supervisor replaced a worker while wrk was running
                why = supervisor_lines(self.procs.log(scenario.key))
                result.events.append(f"worker pid(s) {gone} exited and {new} started "
                                     "during the measured run" + (f": {why}" if why else ""))
            elif len(workers) > 1:  # how evenly the kernel spread the connections
                split = "/".join(f"{100 * (cpu_seconds([pid]) - start) / max(used, 1e-9):.0f}%"
                                 for pid, start in sorted(workers.items()))
                result.worker_cpu = [split]
            result.requests = numbers["requests"]
            result.seconds = numbers["seconds"]
            result.rps = numbers["rps"]
            result.p50_ms = numbers["p50_ms"]
            result.p99_ms = numbers["p99_ms"]
            result.errors = numbers["errors"]
            if result.requests:
                result.cpu_us_per_request = used * 1e6 / result.requests
        except Skip as exc:
            result.status, result.reason = "skipped", str(exc)
        except Exception as exc:  # one broken scenario must not end the run
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.stop_started(started)
        if scenario.key == "backend":
            result.title = f"backend alone ({self.backend_kind})"
        return result

    def stop_started(self, started: int) -> None:
        """Stop what this scenario started, but not the shared backend it may have started."""
        for _name, proc in list(self.procs.running[started:])[::-1]:
            if proc is not self.backend_proc:
                self.procs.stop(proc)

    def run(self, scenarios: Iterable[Scenario], progress=None, rounds: int = 1) -> list[Result]:
        """Every scenario once per round, alternating; medians when more than one round."""
        scenarios = list(scenarios)
        runs: dict[str, list[Result]] = {s.key: [] for s in scenarios}
        try:
            for n in range(1, rounds + 1):
                for scenario in scenarios:
                    label = f"[{scenario.id}]" if rounds == 1 else f"[round {n}/{rounds}] " \
                        f"[{scenario.id}]"
                    if progress:
                        progress(f"{label} {scenario.title} ...")
                    result = self.measure(scenario)
                    if progress:
                        progress(f"{label} " + (
                            f"{result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms, "
                            f"errors {result.error_count}" if result.ok
                            else f"{result.status}: {result.reason}"))
                    runs[scenario.key].append(result)
        finally:
            self.procs.stop_all()
        return [combine(runs[s.key]) for s in scenarios]


# -- command line ----------------------------------------------------------------------------

def select(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    chosen = []
    for item in (part.strip() for part in only.split(",") if part.strip()):
        scenario = next((s for s in SCENARIOS if item in (s.key, str(s.id))), None)
        if scenario is None:
            names = ", ".join(f"{s.id}={s.key}" for s in SCENARIOS)
            raise SystemExit(f"run.py: unknown scenario {item!r}; choose from {names}")
        if scenario not in chosen:
            chosen.append(scenario)
    return sorted(chosen, key=lambda s: s.id)


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": model, "cores": os.cpu_count(),
            "usable_cores": sorted(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version()}


def git_state() -> dict:
    """The commit measured and the tracked files changed on top of it (a shared checkout may
    be edited while the benchmark runs: record what was there)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    changed = sorted(line[3:] for line in (status or "").splitlines() if line.strip())
    return {"commit": commit, "changed": changed}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark chistone side by side with its anchors (issue 8).")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per scenario, not measured (default 3; 1 with "
                             "--quick)")
    parser.add_argument("--quick", action="store_true", help="2 s runs after a 1 s warm-up")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--only", help="comma-separated scenario keys or numbers: "
                        + ", ".join(f"{s.id}={s.key}" for s in SCENARIOS))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="where to write the results (default bench/out/results.json)")
    parser.add_argument("--backend", choices=("auto", "nginx", "python"), default="auto",
                        help="the fast backend: nginx if installed (auto), or the asyncio one")
    parser.add_argument("--two-service-server", choices=("daphne", "uvicorn"), default="daphne",
                        help="server for both halves of scenario 5 (default daphne, like 6)")
    parser.add_argument("--ready-timeout", type=float, default=30.0,
                        help="seconds a server may take to answer its first request (30)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternating rounds; medians are reported (default 1)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--no-install", action="store_true",
                        help="do not run bench/install_tools.sh when tools are missing")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, logs, database)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    if args.duration < 1 or args.connections < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--duration must be >= 1, --connections >= 1, --warmup >= 0, "
                     "--rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select(args.only)
    tools = Tools.detect()
    if not args.no_install and (not tools.wrk or not tools.nginx or not tools.lua):
        install_tools()
        tools = Tools.detect()
    pinning = plan_pinning(sorted(os.sched_getaffinity(0)), bool(tools.taskset))
    git_start = git_state()
    workdir = Path(tempfile.mkdtemp(prefix="chistone-bench-"))
    harness = Harness(tools=tools, pinning=pinning, workdir=workdir, duration=args.duration,
                      warmup=args.warmup, connections=args.connections, backend=args.backend,
                      ready_timeout=args.ready_timeout,
                      two_service_server=args.two_service_server, keep=args.keep)
    rounds = f", {args.rounds} rounds (medians)" if args.rounds > 1 else ""
    print(f"chistone bench: {len(scenarios)} scenario(s){rounds}, {args.duration:g} s each after "
          f"{args.warmup:g} s warm-up, wrk 1 thread {args.connections} connections; "
          f"{pinning.note}; backend {harness.backend_kind}", file=sys.stderr)
    if git_start["commit"]:
        changed = f", {len(git_start['changed'])} tracked file(s) changed on top" \
            if git_start["changed"] else ""
        print(f"code: commit {git_start['commit']}{changed}", file=sys.stderr)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        results = harness.run(scenarios, progress=lambda msg: print(msg, file=sys.stderr),
                              rounds=args.rounds)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    add_ratios(results)
    checks = check_targets(results)
    print()
    print(format_table(results))
    if args.markdown:
        print()
        print(format_table(results, markdown=True))
    print()
    print(format_targets(checks))
    git_end = git_state()
    if git_end != git_start:
        print(f"\nnote: the checkout changed during the run (commit {git_start['commit']} -> "
              f"{git_end['commit']}; changed files {git_start['changed']} -> "
              f"{git_end['changed']}): servers started at different times ran different code")
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": {"start": git_start, "end": git_end},
        "tools": {"wrk": tools.wrk and _version([tools.wrk, "-v"]),
                  "nginx": tools.nginx and _version([tools.nginx, "-v"]),
                  "nginx_lua_module": tools.lua, "taskset": bool(tools.taskset)},
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                     "connections": args.connections, "wrk_threads": 1,
                     "rounds": args.rounds,
                     "request": REQUEST_PATH, "request_headers": len(REQUEST_HEADERS),
                     "routes": ROUTES, "backend": harness.backend_kind,
                     "two_service_server": args.two_service_server, "pinning": asdict(pinning)},
        "reference": REFERENCE,
        "scenarios": [asdict(r) for r in results],
        "targets": checks,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
