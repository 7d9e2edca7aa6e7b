"""Fixtures of the browser tests: the real server, real backends, Debian's Chromium.

The server under test is `manage.py serve` (two workers, so every figure must be merged
across them) in a subprocess on a temporary SQLite database. Chromium is Debian's
/usr/bin/chromium, driven by Playwright's Python package. Screenshots of every page at
1366 and 375 px go to test-artifacts/screenshots/ (or $CHISTONE_SCREENSHOTS).

Without Chromium the tests fail with the command that installs it; they are never skipped.
`make test` installs it first when it runs as root (tests/system_packages.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHISTONE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("CHISTONE_SCREENSHOTS",
                                  ROOT / "test-artifacts" / "screenshots"))
PASSWORD = "walkthrough-pw-1"
OPERATOR_PASSWORD = "operator-pw-1"
WIDE, NARROW = 1366, 375
WORKERS = 2


def require_browser() -> None:
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            reason = f"Playwright's Python package is missing ({exc})"
        else:
            return
    else:
        reason = (f"Chromium is not installed at {CHROMIUM}: install Debian's package with "
                  "`sudo apt-get install -y chromium` (`make test` does when run as root)")
    pytest.fail(f"THE BROWSER TESTS CANNOT RUN: {reason}.", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up within {timeout}s: {last}")


def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


class _Backend(BaseHTTPRequestHandler):
    """/ok: 200; /fail: 503; /slow: 200 after 0.6 s; /health-slow: 200 after 6 s."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.endswith("/slow"):
            time.sleep(0.6)
        if path.endswith("/health-slow"):
            time.sleep(6)
        status = 503 if path.endswith("/fail") else 200
        body = f"backend says {status} for {path}".encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def server():
    require_browser()
    tmp = Path(tempfile.mkdtemp(prefix="chistone-browser-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({
        "CHISTONE_VAR_DIR": str(tmp),
        "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
        "CHISTONE_HEALTH_INTERVAL_S": "1",
        "CHISTONE_HEALTH_TIMEOUT_S": "10",
        "CHISTONE_LOGIN_THROTTLE": "0",
    })
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT,
                   check=True, timeout=300)
    subprocess.run([*manage, "createsuperuser", "--noinput", "--username", "ops",
                    "--email", "ops@example.com"], env=env, cwd=ROOT, check=True, timeout=120)
    data_port, control_port = free_port(), free_port()
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--data-port", str(data_port),
         "--control-port", str(control_port), "--workers", str(WORKERS)],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(f"http://127.0.0.1:{control_port}/admin/login/")
        except AssertionError:
            log.flush()
            print((tmp / "server.log").read_text()[-5000:])
            raise
        yield {"control": f"http://127.0.0.1:{control_port}", "data_port": data_port,
               "log": tmp / "server.log", "env": env, "manage": manage}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def manage_shell(server, code: str) -> str:
    """Run Python in `manage.py shell` against the server's database (setup steps only)."""
    out = subprocess.run([*server["manage"], "shell", "-c", code], env=server["env"], cwd=ROOT,
                         check=True, timeout=120, capture_output=True, text=True)
    return out.stdout


@pytest.fixture(scope="module")
def browser(server):
    """Per module: Playwright's sync API runs an event loop in this thread while it is open,
    which the asynchronous tests of later modules must not find running."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots_dir():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    print(f"\nscreenshots: {SCREENSHOTS}")
    return SCREENSHOTS


class Shots:
    """Numbered full-page screenshots of one test, named `<prefix>-NN-<step>.png`."""

    def __init__(self, page, prefix: str, folder: Path) -> None:
        self.page = page
        self.prefix = prefix
        self.folder = folder
        self.count = 0

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.prefix}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"  {path}")
        return path

    def both_widths(self, name: str) -> None:
        """The page as it is at 1366 px and at 375 px: no horizontal overflow at either
        (`document.documentElement.scrollWidth <= innerWidth`), a screenshot of each."""
        height = self.page.viewport_size["height"] if self.page.viewport_size else 900
        for width in (WIDE, NARROW):
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.wait_for_timeout(150)  # the charts redraw on resize
            overflow = self.page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]")
            self(f"{name}-{width}")
            assert overflow[0] <= overflow[1], (
                f"{name} overflows at {width} px: {overflow[0]} > {overflow[1]} "
                f"({self.page.url})")
        self.page.set_viewport_size({"width": WIDE, "height": height})


def login(page, base: str, username: str = "ops", password: str = PASSWORD) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#gateway-dashboard")


def data_plane_get(port: int, host: str, path: str) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
