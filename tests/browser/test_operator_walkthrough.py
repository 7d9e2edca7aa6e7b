"""An operator's walk through the admin in real headless Chromium, against the real server.

The server under test is `manage.py serve` in a subprocess on a temporary SQLite database.
Chromium is Debian's /usr/bin/chromium, driven by Playwright's Python package. Each step
writes a screenshot; the folder is printed (and kept) so a person can look at them.

Without Chromium the test fails with the command that installs it; it is never skipped.
`make test` installs it first when it runs as root (tests/system_packages.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHISTONE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("CHISTONE_SCREENSHOTS",
                                  ROOT / "test-artifacts" / "screenshots"))
PASSWORD = "walkthrough-pw-1"

# Line 3 is where Lua notices the call opened on line 2 is never closed.
BROKEN = """chi.get("/hello", function(req)
  return respond(200, "v1"
end)
"""
FIXED = """chi.get("/hello", function(req)
  return respond(200, "hello from v2")
end)

chi.get("/users/{id}", function(req)
  return proxy("api", {path = "/u/" .. req.params.id})
end)
"""
NEXT = FIXED.replace("hello from v2", "hello from v3")


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
    pytest.fail(f"THE BROWSER TEST CANNOT RUN: {reason}.", pytrace=False)


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


def data_plane_get(port: int, host: str, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server():
    require_browser()
    tmp = Path(tempfile.mkdtemp(prefix="chistone-browser-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({
        "CHISTONE_VAR_DIR": str(tmp),
        "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
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
         "--control-port", str(control_port), "--workers", "1"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(f"http://127.0.0.1:{control_port}/admin/login/")
        except AssertionError:
            log.flush()
            print((tmp / "server.log").read_text()[-5000:])
            raise
        yield {"control": f"http://127.0.0.1:{control_port}", "data_port": data_port,
               "log": tmp / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Shots:
    def __init__(self, page) -> None:
        self.page = page
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob("*.png"):
            old.unlink()
        print(f"\nscreenshots: {SCREENSHOTS}")

    def __call__(self, name: str) -> None:
        self.count += 1
        path = SCREENSHOTS / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"  {path}")


def set_editor(page, text: str) -> None:
    """Type into the ace editor as an operator would: select all, then type the new text."""
    page.click(".chistone-editor .ace_content")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)
    # django-ace mirrors the editor into the form's textarea on every change.
    assert page.eval_on_selector("textarea[name=source]", "t => t.value") == text


def test_operator_walkthrough(server, browser):
    base = server["control"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    shot = Shots(page)
    try:
        walk(page, shot, base, server["data_port"])
    except Exception:
        shot("failure")
        print(server["log"].read_text()[-5000:])
        raise


def walk(page, shot, base: str, data_port: int) -> None:
    # 1. Log in.
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    shot("login")
    page.click("input[type=submit]")
    page.wait_for_selector("#gateway-dashboard")
    assert page.locator("#user-tools").inner_text().upper().find("OPS") >= 0
    # The admin's own CSS is served by the control plane itself.
    assert page.evaluate("getComputedStyle(document.querySelector('#header')).display") != ""
    shot("dashboard")

    # 2. Create a tenant with a backend.
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_slug", "shop")
    page.fill("#id_name", "Shop")
    page.fill("#id_domains", "shop.localhost")
    page.fill("#id_backends-0-name", "api")
    page.fill("#id_backends-0-url", "http://127.0.0.1:9")
    shot("new-tenant-form")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert "was added successfully" in page.locator(".messagelist").inner_text()
    assert page.input_value("#id_backends-0-name") == "api"
    shot("tenant-created")

    # 3. Open the script page and type a script with a syntax error.
    page.click(".object-tools a[href*='/scriptversion/tenant/']")
    page.wait_for_selector(".chistone-editor .ace_content")
    set_editor(page, BROKEN)
    page.fill("#id_message", "first try")
    page.click("input[name=_publish]")
    page.wait_for_selector("#validation-errors")
    errors = page.locator("#validation-errors").inner_text()
    assert re.search(r"Line 3\b", errors), errors
    assert "Saved as draft v1" in page.locator(".messagelist").inner_text()
    # The error sits at its line: in the quoted source and in the editor's gutter.
    assert page.locator("tr#L3.has-error").count() == 1
    page.wait_for_selector(".ace_gutter-cell.chistone-error-line")
    gutter = page.locator(".ace_gutter-cell.chistone-error-line").first.inner_text()
    assert gutter.strip() == "3"
    shot("syntax-error-at-line-3")

    # 4. Fix it and save: a new, valid version; nothing active yet.
    set_editor(page, FIXED)
    page.fill("#id_message", "fixed")
    page.click("input[name=_publish]")
    page.wait_for_selector(".messagelist .success")
    assert "Saved v2" in page.locator(".messagelist").inner_text()
    assert page.locator("#validation-errors").count() == 0
    shot("fixed-and-saved")

    # 5. Try a request in the dry-run console.
    page.select_option("#id_version", "2")
    page.fill("#id_path", "/users/42")
    page.fill("#id_headers", "X-Trace: abc")
    page.click("input[name=_try]")
    page.wait_for_selector("#dry-run-result")
    result = page.locator("#dry-run-result").inner_text()
    assert "/users/{id}" in result and "api" in result and "/u/42" in result, result
    shot("dry-run")
    status, _ = data_plane_get(data_port, "shop.localhost", "/hello")
    assert status != 200  # nothing active yet: the backend pool (unreachable) answers

    # 6. Activate v2 after a confirmation page that shows the diff.
    page.click("#history-v2 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    assert page.locator("#diff table.chistone-diff").count() == 1
    shot("activate-confirmation")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert "Activated v2" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")
                      == (200, "hello from v2"))
    shot("activated-v2")

    # 7. Publish v3 and activate it: the confirmation shows the diff against the active v2.
    set_editor(page, NEXT)
    page.fill("#id_message", "new greeting")
    page.click("input[name=_publish]")
    page.wait_for_selector(".messagelist .success")
    page.click("#history-v3 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    diff = page.locator("#diff").inner_text()
    assert "hello from v2" in diff and "hello from v3" in diff
    assert page.locator("#diff tr.replace").count() == 1
    shot("diff-against-active")
    page.click("text=unified")
    page.wait_for_selector("#diff table.unified")
    shot("diff-unified")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")
                      == (200, "hello from v3"))

    # 8. Roll back to v2.
    page.click("#history-v2 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    assert "Roll back" in page.locator("h1").inner_text()
    assert "Yes, roll back to v2" in page.locator("#confirm-activate").input_value()
    shot("rollback-confirmation")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert "Rolled back to v2" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")
                      == (200, "hello from v2"))
    shot("rolled-back")

    # 9. The audit log tells who did what.
    page.goto(f"{base}/admin/tenants/auditevent/?tenant=shop&actor=ops")
    text = page.locator("#result_list").inner_text()
    for action in ("tenant.create", "backend.create", "script.publish", "script.activate",
                   "script.rollback"):
        assert action in text, action
    shot("audit-log")
