"""CI step: `pip install .` in a clean virtual environment, without extras, runs chistone.

1. `make install-runtime` into a new venv: pyproject's dependencies, at the runtime lock's
   versions. What it installed must be exactly requirements/runtime.txt, and no test or lint
   tool may be importable.
2. From a directory outside the checkout (so only the installed package is used):
   `manage.py check` (as `python -m django`), `chistone --help`, migrate, load the demo, then
   `serve` on free ports: the control plane's /readyz answers ready, its admin login page
   renders (templates ship in the package), and the data plane answers: the demo's Lua auth
   middleware refuses a write (401) and an unknown tenant gets the JSON 404.
3. The checkout's own `manage.py check` with that interpreter.

Standard library only. Exit status 0 when everything held; otherwise the failing step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_TOOLS = ["pytest", "pytest_asyncio", "pytest_django", "pytest_timeout", "pytest_benchmark",
             "hypothesis", "schemathesis", "playwright", "ruff", "importlinter"]


class Failed(Exception):
    pass


def step(title: str) -> None:
    print(f"--- {title}", flush=True)


def run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, *, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise Failed(f"serve exited {server.returncode} before it was ready")
        try:
            status, body = fetch(url)
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise Failed(f"{url} was not ready within {timeout:.0f} s: {last}")


def _normalised(pins: list[str]) -> list[str]:
    return sorted(pin.lower().replace("_", "-") for pin in pins)


def check_installed(python: Path, env: dict[str, str], work: Path) -> None:
    step("installed packages are exactly requirements/runtime.txt")
    frozen = run([str(python), "-m", "pip", "freeze", "--exclude", "chistone"], env=env, cwd=work)
    locked = [line for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    installed, wanted = _normalised(frozen.split()), _normalised(locked)
    if installed != wanted:
        extra, absent = set(installed) - set(wanted), set(wanted) - set(installed)
        raise Failed(f"the runtime install differs from requirements/runtime.txt: installed but "
                     f"not locked {sorted(extra)}, locked but not installed {sorted(absent)} "
                     "(run `make lock`)")
    step("no test or lint tool is importable")
    probe = ("import importlib.util, json; print(json.dumps([m for m in "
             f"{DEV_TOOLS!r} if importlib.util.find_spec(m)]))")
    present = json.loads(run([str(python), "-c", probe], env=env, cwd=work))
    if present:
        raise Failed(f"a runtime install brought development tools: {present}")


def serve_and_ask(python: Path, env: dict[str, str], work: Path) -> None:
    data_port, control_port = free_port(), free_port()
    step(f"serve on 127.0.0.1:{data_port} (data) and :{control_port} (control)")
    server = subprocess.Popen(
        [str(python), "-m", "django", "serve", "--host", "127.0.0.1", "--workers", "1",
         "--data-port", str(data_port), "--control-port", str(control_port)],
        env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        control = f"http://127.0.0.1:{control_port}"
        data = f"http://127.0.0.1:{data_port}"
        wait_ready(f"{control}/readyz", server)
        status, body = fetch(f"{control}/readyz")
        if json.loads(body).get("status") != "ready":
            raise Failed(f"/readyz: {status} {body!r}")
        status, body = fetch(f"{control}/admin/login/")
        if status != 200 or b"csrfmiddlewaretoken" not in body:
            raise Failed(f"the admin login page: {status} {body[:300]!r}")
        status, body = fetch(f"{data}/api/v1/v1/users", host="acme.localhost", method="POST")
        if status != 401:
            raise Failed(f"the demo's Lua auth middleware: expected 401, got {status} "
                         f"{body[:300]!r}")
        status, body = fetch(f"{data}/", host="nobody.localhost")
        if status != 404 or "error" not in json.loads(body):
            raise Failed(f"an unknown tenant: expected the JSON 404, got {status} {body!r}")
        print("    /readyz ready, admin login 200, acme write 401 (Lua), unknown tenant 404")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output, _ = server.communicate()
        if server.returncode != 0:
            print(output)
            raise Failed(f"serve exited {server.returncode} on SIGTERM")


def main() -> int:
    build_existed = (ROOT / "build").exists()
    try:
        return _main()
    finally:
        if not build_existed:  # setuptools' in-tree build directory
            shutil.rmtree(ROOT / "build", ignore_errors=True)


def _main() -> int:
    with tempfile.TemporaryDirectory(prefix="chistone-clean-install-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        python = venv / "bin" / "python"
        base_env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR")
                    if key in os.environ}
        try:
            step(f"make install-runtime RUNTIME_VENV={venv}")
            run(["make", "--no-print-directory", "install-runtime", f"RUNTIME_VENV={venv}"],
                env=base_env, cwd=ROOT, timeout=1200)
            check_installed(python, base_env, work)
            env = {**base_env, "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
                   "DATABASE_URL": f"sqlite:///{work / 'chistone.sqlite3'}",
                   "CHISTONE_VAR_DIR": str(work / "var"), "CHISTONE_LOG_FORMAT": "plain"}
            step("manage.py check (installed package, outside the checkout)")
            run([str(python), "-m", "django", "check"], env=env, cwd=work)
            step("chistone --help")
            usage = run([str(venv / "bin" / "chistone"), "--help"], env=env, cwd=work)
            if "lint" not in usage or "push" not in usage:
                raise Failed(f"chistone --help printed no commands:\n{usage}")
            step("the admin's templates come from the installed package")
            origin = run([str(python), "-m", "django", "shell", "-c",
                          "from django.template.loader import get_template; "
                          "print(get_template('admin/index.html').origin.name)"],
                         env=env, cwd=work).strip().splitlines()[-1]
            if not origin.startswith(str(venv)) or "chistone_site/templates" not in origin:
                raise Failed(f"admin/index.html came from {origin}, not the installed package")
            step("migrate and load the demo")
            run([str(python), "-m", "django", "migrate", "--noinput"], env=env, cwd=work)
            run([str(python), "-m", "django", "load_demo"], env=env, cwd=work)
            serve_and_ask(python, env, work)
            step("the checkout's manage.py check with the runtime interpreter")
            run([str(python), str(ROOT / "manage.py"), "check"], env=env, cwd=ROOT)
        except (Failed, subprocess.TimeoutExpired) as exc:
            print(f"CLEAN INSTALL FAILED: {exc}", flush=True)
            return 1
    print("clean install: OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
