"""Smoke tests of the benchmark harness (bench/run.py): no real benchmark, a few seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.anchors.backend import parse_head
from bench.seed import script_source

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/api/v1/svc40/items/12345?page=2
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    16.52ms   20.01ms 412.00ms   95.12%
    Req/Sec     2.71k   210.33     3.01k    81.00%
  Latency Distribution
     50%   14.20ms
     75%   16.90ms
     90%   22.31ms
     99%  145.34ms
  26930 requests in 10.00s, 4.81MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   2692.99
Transfer/sec:    492.31KB
"""


def result(key: str, rps: float | None = None, status: str = "ok", **extra) -> bench_run.Result:
    scenario = bench_run.BY_KEY[key]
    r = bench_run.Result(scenario.id, key, scenario.title, status=status, rps=rps, **extra)
    if status == "ok":
        r.p50_ms, r.p99_ms = 1.0, 2.0
    return r


def by_target(checks: list[dict]) -> dict[str, str]:
    return {c["target"].split(" [")[0]: c["status"] for c in checks}


def test_parse_wrk_reads_rate_latency_and_errors():
    parsed = bench_run.parse_wrk(WRK_OUTPUT)
    assert parsed["requests"] == 26930
    assert parsed["seconds"] == pytest.approx(10.0)
    assert parsed["rps"] == pytest.approx(2692.99)
    assert parsed["p50_ms"] == pytest.approx(14.2)
    assert parsed["p99_ms"] == pytest.approx(145.34)
    assert parsed["errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 3, "non_2xx": 7}


def test_parse_wrk_units_and_clean_run():
    clean = WRK_OUTPUT.replace("14.20ms", "240.00us").replace("145.34ms", "1.20s")
    clean = re.sub(r"  (Socket errors|Non-2xx).*\n", "", clean)
    parsed = bench_run.parse_wrk(clean)
    assert parsed["p50_ms"] == pytest.approx(0.24)
    assert parsed["p99_ms"] == pytest.approx(1200.0)
    assert sum(parsed["errors"].values()) == 0
    with pytest.raises(ValueError, match="could not parse"):
        bench_run.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_ratios_are_relative_to_chistone_under_daphne():
    results = [result("passthrough", 1000.0), result("two_service", 400.0),
               result("chistone", 900.0), result("chistone_workers2", 1600.0),
               result("chistone_uvicorn", status="skipped", reason="serve not ready")]
    bench_run.add_ratios(results)
    ratios = {r.key: r.ratio for r in results}
    assert ratios["chistone"] == pytest.approx(1.0)
    assert ratios["passthrough"] == pytest.approx(1000 / 900)
    assert ratios["chistone_uvicorn"] is None

    checks = by_target(bench_run.check_targets(results))
    assert checks["chistone (daphne) >= 0.85x bare daphne passthrough"] == "PASS"  # 0.90
    assert checks["chistone >= 2.0x the two-service design"] == "PASS"  # 2.25
    assert checks["--workers 2 >= 1.7x one worker"] == "PASS"  # 1.78
    assert checks["uvicorn >= 1.8x daphne"] == "N/A"
    assert checks["no errors in any scenario"] == "PASS"
    assert checks["p99 reported for every scenario"] == "FAIL"  # 8 was skipped


def test_targets_fail_below_threshold_and_on_errors():
    results = [result("passthrough", 1000.0), result("two_service", 500.0),
               result("chistone", 800.0, errors={"non_2xx": 4, "timeout": 0}),
               result("chistone_uvicorn", 1500.0)]
    checks = bench_run.check_targets(results)
    status = by_target(checks)
    assert status["chistone (daphne) >= 0.85x bare daphne passthrough"] == "FAIL"  # 0.80
    assert status["chistone >= 2.0x the two-service design"] == "FAIL"  # 1.60
    assert status["uvicorn >= 1.8x daphne"] == "PASS"  # 1.875
    assert status["--workers 2 >= 1.7x one worker"] == "N/A"  # 7 not run
    assert status["no errors in any scenario"] == "FAIL"
    assert "not run" in next(c["detail"] for c in checks if c["target"].startswith("--workers"))


def test_no_chistone_means_no_ratios():
    results = [result("backend", 50_000.0), result("chistone", status="skipped", reason="x")]
    bench_run.add_ratios(results)
    assert [r.ratio for r in results] == [None, None]
    assert all(c["status"] == "N/A" for c in bench_run.check_targets(results)[:4])


def test_table_lists_skipped_scenarios_with_their_reason():
    results = [result("backend", 131_793.0, cpu_us_per_request=7.2),
               result("chistone", 2500.0),
               result("nginx_lua", status="skipped", reason="nginx Lua module not installed"),
               result("chistone_workers2", status="failed", reason="RuntimeError: wrk exited")]
    bench_run.add_ratios(results)
    table = bench_run.format_table(results)
    assert "131,793" in table and "52.72x" in table and "1.00x" in table
    assert "nginx + Lua routing decision, then proxy: skipped: nginx Lua module" in table
    assert "failed: RuntimeError: wrk exited" in table
    markdown = bench_run.format_table(results, markdown=True)
    assert markdown.count("\n") == len(results) + 1
    assert markdown.splitlines()[1].startswith("|---|---|")


def test_combine_takes_medians_over_measured_rounds():
    rounds = [result("passthrough", 1000.0, requests=10, errors={"read": 1}),
              result("passthrough", 3000.0, requests=30, errors={"read": 0}),
              result("passthrough", 2000.0, requests=20, errors={"read": 2}),
              result("passthrough", status="failed", reason="wrk exited")]
    combined = bench_run.combine(rounds)
    assert combined.ok and combined.rps == 2000.0
    assert combined.requests == 60 and combined.errors == {"read": 3}
    assert combined.rounds == [1000.0, 3000.0, 2000.0]
    assert "3 of 4 rounds" in combined.note and "round 4: failed" in combined.reason
    skipped = result("backend", status="skipped", reason="wrk not installed")
    assert bench_run.combine([skipped, skipped]) is skipped


def test_worker_cpu_split_of_every_round_is_kept_and_shown():
    rounds = []
    for rps, split in ((2500.0, "50%/50%"), (1500.0, "97%/3%"), (1600.0, "96%/4%")):
        r = result("chistone_workers2", rps, requests=10)
        r.worker_cpu = [split]
        rounds.append(r)
    combined = bench_run.combine(rounds)
    assert combined.worker_cpu == ["50%/50%", "97%/3%", "96%/4%"]
    bench_run.add_ratios([combined])
    assert "worker CPU 50%/50%, 97%/3%, 96%/4%" in bench_run.format_table([combined])


def test_supervisor_lines_skip_the_access_log(tmp_path):
    log = tmp_path / "chistone.log"
    log.write_text("2026 INFO chistone.supervisor started worker 0 (pid 1, daphne)\n"
                   '{"request_id":"x","status":200,"error":null}\n'
                   "2026 INFO chistone.access {\"status\": 200}\n"
                   "2026 WARNING chistone.supervisor worker 0 (pid 1) hung for 5.2 s: killed\n")
    lines = bench_run.supervisor_lines(log)
    assert lines.startswith("2026 INFO chistone.supervisor started worker 0")
    assert lines.endswith("hung for 5.2 s: killed") and "request_id" not in lines
    assert bench_run.supervisor_lines(tmp_path / "missing.log") == ""


def test_supervisor_lines_read_json_logs(tmp_path):
    log = tmp_path / "chistone.log"
    log.write_text(
        "chistone: 1 daphne worker(s), reuseport listeners\n"
        '{"ts": "t", "level": "info", "logger": "chistone.supervisor", '
        '"msg": "started worker 0 (pid 1, daphne)"}\n'
        '{"ts": "t", "logger": "chistone.access", "request_id": "worker", "status": 200}\n'
        '{"ts": "t", "level": "error", "logger": "chistone.worker", "msg": "worker crashed", '
        '"exc": "Traceback ...\\nMemoryError: boom"}\n'
        '{"ts": "t", "level": "warning", "logger": "chistone.supervisor", '
        '"msg": "worker 0 (pid 1) exited with -9; replacing it"}\n')
    lines = bench_run.supervisor_lines(log, count=2).split(" | ")
    assert lines == ["error chistone.worker worker crashed", "MemoryError: boom",
                     "warning chistone.supervisor worker 0 (pid 1) exited with -9; replacing it"]


def test_chistone_workers_are_found_by_their_command_line():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)",
                             "chistone_site.workers.worker"])
    try:
        for _ in range(50):  # until the child's exec shows in /proc/<pid>/cmdline
            found = bench_run.chistone_workers([proc.pid, os.getpid()])
            if found:
                break
            time.sleep(0.05)
        assert found == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


def test_select_accepts_numbers_and_keys_and_refuses_unknown():
    assert [s.id for s in bench_run.select("chistone,1,4,1")] == [1, 4, 6]
    assert len(bench_run.select(None)) == 13
    with pytest.raises(SystemExit, match="unknown scenario"):
        bench_run.select("haproxy")


def test_pinning_plan():
    two = bench_run.plan_pinning([0, 1], taskset=True)
    assert (two.client, two.server, two.server_two) == ((0,), (1,), (0, 1))
    assert two.shared_two
    four = bench_run.plan_pinning([0, 1, 2, 3], taskset=True)
    assert four.server_two == (1, 2) and not four.shared_two
    assert bench_run.plan_pinning([0], taskset=True).server == ()
    assert "taskset" in bench_run.plan_pinning([0, 1], taskset=False).note


def test_missing_tools_skip_every_scenario_with_a_reason(tmp_path):
    tools = bench_run.Tools(wrk=None, nginx=None, lua=False, taskset=None)
    harness = bench_run.Harness(tools=tools, pinning=bench_run.Pinning(), workdir=tmp_path,
                            duration=1, warmup=0, connections=10)
    results = harness.run(bench_run.SCENARIOS)
    assert [r.id for r in results] == list(range(1, 14))
    assert all(r.status == "skipped" and "wrk not installed" in r.reason for r in results)
    assert harness.backend_kind == "python"
    with_wrk = bench_run.Tools(wrk="/usr/bin/wrk", nginx=None, lua=False, taskset=None)
    assert "nginx not installed" in with_wrk.missing(bench_run.BY_KEY["nginx_lua"].needs)
    assert with_wrk.missing(bench_run.BY_KEY["passthrough"].needs) is None


def test_a_server_that_exits_is_skipped_with_its_output(tmp_path):
    procs = bench_run.Processes(tmp_path, taskset=None)
    proc = procs.start("dying", [sys.executable, "-c", "print('no such setting'); exit(3)"])
    proc.wait(timeout=10)
    with pytest.raises(bench_run.Skip, match=r"dying exited with code 3 .*no such setting"):
        bench_run.wait_ready(bench_run.free_port(),
                             procs=[("dying", proc, procs.log("dying"))], timeout=5)


def test_a_server_that_never_answers_is_skipped_after_the_bound(tmp_path):
    procs = bench_run.Processes(tmp_path, taskset=None)
    proc = procs.start("silent", [sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(bench_run.Skip, match=r"serve not ready within 0.5 s"):
            bench_run.wait_ready(bench_run.free_port(),
                                 procs=[("silent", proc, procs.log("silent"))],
                                 timeout=0.5, what="serve")
    finally:
        procs.stop_all()
    assert proc.poll() is not None and not procs.running


def test_cpu_accounting_covers_the_process_tree():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        tree = bench_run.process_tree([os.getpid()])
        assert {os.getpid(), child.pid} <= tree
        assert bench_run.cpu_seconds([os.getpid()]) > 0
        assert bench_run.cpu_seconds([999_999_999]) == 0
    finally:
        child.kill()
        child.wait()


def test_seed_script_has_one_middleware_and_the_requested_route():
    source = script_source(50)
    assert source.count("chi.use(") == 1
    assert source.count("chi.get(") == 50
    assert 'chi.get("/api/v1/svc40/items/{id}", function(req) return proxy("backend") end)' \
        in source
    assert bench_run.REQUEST_PATH.startswith("/api/v1/svc40/items/")


def test_fallback_backend_keep_alive_rules():
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x") == (0, False)
    assert parse_head(b"GET / HTTP/1.1\r\nConnection: close") == (0, True)
    assert parse_head(b"GET / HTTP/1.0\r\nHost: x") == (0, True)
    assert parse_head(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5") \
        == (5, False)


def test_one_second_run_of_the_backend_alone(tmp_path):
    """The real command, scenario 1 only, against the asyncio fallback backend."""
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "backend", "--duration", "1",
         "--warmup", "0", "--backend", "python", "--no-install", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    (row,) = report["scenarios"]
    assert row["key"] == "backend" and report["settings"]["backend"] == "python"
    if bench_run.Tools.detect().wrk is None:
        assert row["status"] == "skipped" and "wrk" in row["reason"]
        assert "wrk not installed" in done.stdout
        return
    assert "backend alone (python)" in done.stdout
    assert row["status"] == "ok", row["reason"]
    assert row["rps"] > 100 and row["requests"] > 100
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert sum(row["errors"].values()) == 0
    assert row["cpu_us_per_request"] > 0
    assert any(c["target"] == "no errors in any scenario" and c["status"] == "PASS"
               for c in report["targets"])


def test_issue_18_cpu_targets_compare_cpu_per_request():
    def row(key, cpu):
        scenario = bench_run.BY_KEY[key]
        return bench_run.Result(scenario.id, key, scenario.title, rps=1000.0,
                                cpu_us_per_request=cpu)

    checks = {c["target"]: c for c in bench_run.check_targets([
        row("nginx_lua", 18), row("passthrough", 300), row("chistone", 320),
        row("chistone_uvicorn", 200), row("passthrough_h1_uvicorn", 100)])}
    daphne = next(c for t, c in checks.items() if t.startswith("chistone (daphne) CPU/req"))
    assert daphne["status"] == "PASS" and daphne["value"] == round(320 / 300, 3)
    fastest = next(c for t, c in checks.items() if "nginx + Lua [8/3]" in t)
    assert fastest["status"] == "FAIL" and fastest["value"] == round(200 / 18, 3)
    same = next(c for t, c in checks.items() if "[8/11]" in t)
    assert same["status"] == "INFO" and same["value"] == 2.0
