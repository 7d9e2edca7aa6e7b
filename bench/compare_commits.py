"""The data plane's CPU per proxied request at two commits, measured in one run.

A change's cost is a ratio against the code before it, and on a shared machine only rounds
taken side by side are comparable. This checks out `--base` into a temporary git worktree
and runs `bench/app_cpu.py --only gateway` from each tree in alternating processes (base,
head, base, head, ...), each with its own warm-up, and prints the per-round figures, both
medians and their ratio. Both trees run with this checkout's virtualenv.

    .venv/bin/python bench/compare_commits.py --base f399e66          # 5 rounds each
    .venv/bin/python bench/compare_commits.py --base HEAD~3 --rounds 3 --requests 10000
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIAN = re.compile(r"median gateway\s+([0-9.]+) us/req")


def measure(tree: Path, requests: int) -> float:
    done = subprocess.run(
        [sys.executable, str(tree / "bench/app_cpu.py"), "--only", "gateway", "--rounds", "1",
         "--requests", str(requests)],
        cwd=tree, capture_output=True, text=True, timeout=900)
    found = MEDIAN.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"app_cpu.py failed in {tree}:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    base_commit = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout.strip()
    head_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="chistone-base-"))
    tree = scratch / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.base], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        base: list[float] = []
        head: list[float] = []
        for n in range(args.rounds):
            base.append(measure(tree, args.requests))
            head.append(measure(ROOT, args.requests))
            print(f"round {n + 1}: base {base_commit} {base[-1]:7.1f} us/req   "
                  f"head {head_commit} {head[-1]:7.1f} us/req", flush=True)
        b, h = statistics.median(base), statistics.median(head)
        print(f"median: base {b:.1f} us/req, head {h:.1f} us/req; head/base {h / b:.3f} "
              f"({(h / b - 1) * 100:+.1f}% CPU per proxied request)")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
