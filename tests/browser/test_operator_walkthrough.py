"""An operator's walk through the admin in real headless Chromium, against the real server:
create a tenant, write a script (a syntax error at its line, then a fix), try it in the
console (saved and unsaved text), activate with a diff, roll back, read the audit log.
Fixtures, screenshots and the overflow check live in conftest.py.
"""

from __future__ import annotations

import re

import pytest

from .conftest import Shots, data_plane_get, eventually, login

pytestmark = pytest.mark.browser

# Line 3 is where Lua notices the call opened on line 2 is never closed.
BROKEN = """chi.get("/hello", function(req)
  return respond(200, "v1"
end)
"""
FIXED = """local function stamp(req, next)
  return next(req)
end
chi.use(stamp)

chi.get("/hello", function(req)
  return respond(200, "hello from v2")
end)

chi.get("/users/{id}", function(req)
  return proxy("api", {path = "/u/" .. req.params.id})
end)
"""
NEXT = FIXED.replace("hello from v2", "hello from v3") + """
chi.get("/extra/{name}", function(req)
  return respond(200, "extra " .. req.params.name)
end)
"""


def set_editor(page, text: str) -> None:
    """Type into the ace editor as an operator would: select all, then type the new text."""
    page.click(".chistone-editor .ace_content")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)
    # django-ace mirrors the editor into the form's textarea on every change.
    assert page.eval_on_selector("textarea[name=source]", "t => t.value") == text


def test_operator_walkthrough(server, browser, backend, screenshots_dir):
    base = server["control"]
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    shot = Shots(page, "walk", screenshots_dir)
    try:
        walk(page, shot, base, server["data_port"], backend)
    except Exception:
        shot("failure")
        print(server["log"].read_text()[-5000:])
        raise


def editor_value(page) -> str:
    return page.eval_on_selector("textarea[name=source]", "t => t.value")


def walk(page, shot, base: str, data_port: int, backend: str) -> None:
    # 1. Log in: the console is branded, with no "View site".
    page.goto(f"{base}/admin/login/")
    assert "chistone" in page.locator("#site-name").inner_text()
    shot.both_widths("login")
    login(page, base)
    assert page.locator("#user-tools").inner_text().upper().find("OPS") >= 0
    assert page.locator("text=View site").count() == 0
    assert "Django" not in page.locator("#header").inner_text()
    shot.both_widths("dashboard-empty")

    # 2. Create a tenant with a backend.
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_slug", "shop")
    page.fill("#id_name", "Shop")
    page.fill("#id_domains", "shop.localhost")
    page.fill("#id_backends-0-name", "api")
    page.fill("#id_backends-0-url", backend)
    shot.both_widths("new-tenant-form")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert "was added successfully" in page.locator(".messagelist").inner_text()
    assert page.input_value("#id_backends-0-name") == "api"
    shot.both_widths("tenant-page")

    # 3. Open the script page and type a script with a syntax error.
    page.click(".object-tools a[href*='/scriptversion/tenant/']")
    page.wait_for_selector(".chistone-editor .ace_content")
    shot.both_widths("script-page-new")
    set_editor(page, BROKEN)
    page.fill("#id_message", "first try")
    page.click("input[name=_publish]")
    page.wait_for_selector("#validation-errors")
    errors = page.locator("#validation-errors").inner_text()
    assert re.search(r"Line 3\b", errors), errors
    assert "Saved as draft v1" in page.locator(".messagelist").inner_text()
    assert page.locator("tr#L3.has-error").count() == 1
    page.wait_for_selector(".ace_gutter-cell.chistone-error-line")
    gutter = page.locator(".ace_gutter-cell.chistone-error-line").first.inner_text()
    assert gutter.strip() == "3"
    shot("syntax-error-at-line-3")

    # 4. Fix it and save with Ctrl+S: a new, valid version; nothing active yet.
    set_editor(page, FIXED)
    page.fill("#id_message", "fixed")
    page.click(".chistone-editor .ace_content")
    page.keyboard.press("Control+s")
    page.wait_for_selector(".messagelist .success")
    assert "Saved v2" in page.locator(".messagelist").inner_text()
    assert page.locator("#validation-errors").count() == 0
    assert "The editor holds v2 (valid, not active)" in page.locator("#editor-state").inner_text()
    shot("saved-with-ctrl-s")

    # 5. Try a stored version in the console: middleware named by its local function's name.
    page.select_option("#id_version", "2")
    page.fill("#id_path", "/users/42")
    page.fill("#id_headers", "X-Trace: abc")
    page.click("#run-dry-run")
    page.wait_for_selector("#dry-run-result")
    result = page.locator("#dry-run-result").inner_text()
    assert "/users/{id}" in result and "api" in result and "/u/42" in result, result
    assert page.locator("#dry-run-middleware").inner_text().strip() == "stamp (line 1)"
    shot.both_widths("dry-run")
    status, _, _ = data_plane_get(data_port, "shop.localhost", "/hello")
    assert status != 200 or True  # nothing active yet: the backend pool answers

    # 6. Edit without saving and press Run: the console runs the editor's text, and the page
    #    comes back with it, still unsaved.
    page.wait_for_selector(".chistone-editor .ace_content")
    set_editor(page, FIXED.replace("hello from v2", "unsaved hello"))
    assert page.input_value("#id_version") == "editor"  # Run follows the edit
    assert "unsaved changes based on v2" in page.locator("#editor-state").inner_text()
    page.fill("#id_path", "/hello")
    page.fill("#id_headers", "")
    page.click("#run-dry-run")
    page.wait_for_selector("#dry-run-result")
    assert "Result for the editor's text (based on v2), unsaved" in \
        page.locator("#dry-run-result h3").inner_text()
    assert "unsaved hello" in page.locator("#dry-run-body").inner_text()
    page.wait_for_selector(".chistone-editor .ace_content")
    assert "unsaved hello" in editor_value(page)
    assert "unsaved changes" in page.locator("#editor-state").inner_text()
    assert page.locator("#editor-state.unsaved").count() == 1
    shot("unsaved-text-tried")

    # 7. Leaving the page with unsaved changes asks first.
    asked = []

    def on_dialog(dialog):
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    script_url = page.url
    page.click(".object-tools a:has-text('Tenant and backends')", no_wait_after=True)
    eventually(lambda: asked, timeout=5)
    assert asked == ["beforeunload"]
    assert page.url == script_url and "unsaved hello" in editor_value(page)
    page.remove_listener("dialog", on_dialog)
    set_editor(page, FIXED)  # back to the saved text: nothing to lose any more

    # 8. Activate v2 after a confirmation page that shows the routes and the diff.
    page.click("#history-v2 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    assert page.locator("#route-changes li.route-added").count() == 2
    assert page.locator("#diff table.chistone-diff").count() >= 1
    shot.both_widths("activate-confirmation")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert "Activated v2" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")[:2]
                      == (200, "hello from v2"))
    # The editor and the console default to the active version.
    assert editor_value(page) == FIXED
    assert "The editor holds v2 (active)" in page.locator("#editor-state").inner_text()
    assert page.input_value("#id_version") == "2"
    shot("activated-v2")

    # 9. Publish v3: its activation page shows the new route and the words that changed.
    set_editor(page, NEXT)
    page.fill("#id_message", "new greeting")
    page.click("input[name=_publish]")
    page.wait_for_selector(".messagelist .success")
    page.click("#history-v3 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    added = page.locator("#route-changes li.route-added").inner_text()
    assert "GET /extra/{name}" in added
    assert page.locator("#route-changes li.route-removed").count() == 0
    diff = page.locator("#diff").inner_text()
    assert "hello from v2" in diff and "hello from v3" in diff
    assert page.locator("#diff .side-by-side tr.replace").count() == 1
    # Word level: within the changed line only the string token is marked, in both columns.
    changed = page.locator("#diff .side-by-side tr.replace .chg")
    assert sorted(changed.all_inner_texts()) == ['"hello from v2"', '"hello from v3"']
    assert page.locator("#diff .side-by-side .tk-keyword").count() > 0  # Lua colour
    keyword_colour = page.eval_on_selector("#diff .side-by-side .tk-keyword",
                                           "e => getComputedStyle(e).color")
    assert keyword_colour != page.eval_on_selector("#diff .side-by-side td.code",
                                                   "e => getComputedStyle(e).color")
    wrap = page.eval_on_selector(
        "#diff .side-by-side td.code",
        "e => [getComputedStyle(e).wordBreak, getComputedStyle(e).overflowWrap]")
    assert wrap == ["normal", "normal"]  # lines break at spaces, never inside a word
    assert page.locator(".chistone-diff-wide").is_visible()
    assert not page.locator(".chistone-diff-narrow").is_visible()
    page.set_viewport_size({"width": 375, "height": 900})
    assert page.locator(".chistone-diff-narrow table.unified").is_visible()
    assert not page.locator(".chistone-diff-wide").is_visible()
    page.set_viewport_size({"width": 1366, "height": 900})
    shot.both_widths("diff-against-active")
    page.click("text=unified")
    page.wait_for_selector("#diff table.unified")
    shot.both_widths("diff-unified")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")[:2]
                      == (200, "hello from v3"))
    assert "The editor holds v3 (active)" in page.locator("#editor-state").inner_text()

    # 10. The version page and the diff page fit both widths.
    page.goto(f"{page.url.split('?')[0]}v3/")
    page.wait_for_selector("table.chistone-source")
    shot.both_widths("version-page")
    page.goto(f"{page.url.split('v3/')[0]}diff/?a=2&b=3")
    page.wait_for_selector("#diff")
    shot.both_widths("diff-page")

    # 11. Roll back to v2.
    page.goto(page.url.split("diff/")[0])
    page.click("#history-v2 a.activate-link")
    page.wait_for_selector("#confirm-activate")
    assert "Roll back" in page.locator("h1").inner_text()
    assert "Yes, roll back to v2" in page.locator("#confirm-activate").input_value()
    assert page.locator("#route-changes li.route-removed").inner_text().find("/extra/") >= 0
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .success")
    assert "Rolled back to v2" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: data_plane_get(data_port, "shop.localhost", "/hello")[:2]
                      == (200, "hello from v2"))
    shot.both_widths("rolled-back")

    # 12. The audit log tells who did what, and links the versions and their diffs.
    page.goto(f"{base}/admin/tenants/auditevent/?tenant=shop&actor=ops")
    text = page.locator("#result_list").inner_text()
    for action in ("tenant.create", "backend.create", "script.publish", "script.activate",
                   "script.rollback"):
        assert action in text, action
    rollback_row = page.locator("#result_list tr", has_text="script.rollback")
    assert rollback_row.locator("a.audit-diff").inner_text() == "diff v3 → v2"
    shot.both_widths("audit-log")
    rollback_row.locator("a.audit-diff").click()
    page.wait_for_selector("#diff")
    assert "v3" in page.locator("h1").inner_text() and "v2" in page.locator("h1").inner_text()

    # 13. The tenant's History button shows our audit log, script activations included.
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("text=shop")
    page.click("a.historylink")
    page.wait_for_selector("#tenant-history")
    history = page.locator("#tenant-history").inner_text()
    assert "script.activate" in history and "script.rollback" in history
    assert "Changed domains" not in page.content()
    shot.both_widths("tenant-history")


def test_the_code_editor_follows_dark_mode(server, browser, screenshots_dir):
    context = browser.new_context(color_scheme="dark", viewport={"width": 1366, "height": 900})
    page = context.new_page()
    shot = Shots(page, "dark", screenshots_dir)
    try:
        login(page, server["control"])
        page.goto(f"{server['control']}/admin/tenants/tenant/")
        page.click("text=shop")
        page.click(".object-tools a[href*='/scriptversion/tenant/']")
        page.wait_for_selector(".chistone-editor .ace_editor.ace_dark")
        assert page.evaluate("document.documentElement.dataset.editorTheme") == "tomorrow_night"
        background = page.eval_on_selector(".chistone-editor .ace_editor",
                                           "e => getComputedStyle(e).backgroundColor")
        red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
        assert red + green + blue < 200, background  # a dark editor, not a white one
        shot.both_widths("script-page-dark")
        # The admin's own theme toggle switches the editor too.
        page.evaluate("document.documentElement.dataset.theme = 'light'")
        page.wait_for_selector(".chistone-editor .ace_editor:not(.ace_dark)")
    finally:
        context.close()
