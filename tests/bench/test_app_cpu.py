"""bench/app_cpu.py drives both ASGI applications for real: a short run, Python backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_app_cpu_proxies_every_request_through_both_applications(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
           "CHISTONE_VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "bench/app_cpu.py", "--backend", "python", "--requests", "300",
         "--rounds", "1", "--concurrency", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.findall(r"round 1 (\w+) +([\d.]+) us/req CPU .* errors (\d+)", done.stdout)
    assert {name for name, _, _ in rounds} == {"passthrough", "gateway"}
    assert all(float(cpu) > 0 and errors == "0" for _, cpu, errors in rounds)
    assert "gateway - passthrough:" in done.stdout


def test_app_cpu_rate_limit_measures_the_redis_round_trip(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
           "CHISTONE_VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "bench/app_cpu.py", "--backend", "python", "--requests", "300",
         "--rounds", "1", "--concurrency", "5", "--rate-limit"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"round 1 gateway\+ratelimit +[\d.]+ us/req CPU .* errors 0", done.stdout)
    assert re.search(r"rate limit on Redis: [+-][\d.]+% CPU per proxied request .*; 0 answers "
                     r"without Redis", done.stdout), done.stdout
