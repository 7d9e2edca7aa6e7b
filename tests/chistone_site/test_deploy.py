"""`manage.py check --deploy` with the production environment file of docs/operations.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_environment() -> dict[str, str]:
    """The KEY=VALUE lines of the first block under "The production environment file"."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("### The production environment file", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "docs/operations.md lost its production environment file"
    env = {}
    for line in block.group(1).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    # Exactly these variables: nothing from the test run (DATABASE_URL, CHISTONE_*) leaks in.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy",
                           "--fail-level", "DEBUG"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_the_documented_production_environment_passes_check_deploy_with_nothing_to_say():
    env = documented_environment()
    assert env["CHISTONE_TRUSTED_PROXIES"] and env["CHISTONE_SSL_REDIRECT"] == "1"
    done = run_check(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_without_the_tls_variables_check_deploy_names_what_is_missing():
    env = {key: value for key, value in documented_environment().items()
           if key in ("DATABASE_URL", "CHISTONE_SECRET_KEY", "CHISTONE_ALLOWED_HOSTS")}
    done = run_check(env)
    assert done.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in done.stderr, done.stderr
