"""One path to activation: outside the action layer no production module stores, activates
or removes a script version through the storage services, so no path can skip validation or
the stored tests. (The admin once called the activation service directly and so skipped
them; tests/admin/test_activation.py shows the admin now refuses with their results.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("chistone_site", "luascripts", "routing", "tenants")
STORAGE = {"activate_version", "publish_version", "deactivate_script"}
ALLOWED = {Path("luascripts/services.py")}  # where they are defined
ACTION_LAYER = Path("chistone_site/actions")


def callers(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            relative = path.relative_to(root)
            if relative in ALLOWED or ACTION_LAYER in relative.parents:
                continue
            if "migrations" in relative.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = (func.attr if isinstance(func, ast.Attribute)
                            else func.id if isinstance(func, ast.Name) else "")
                    if name in STORAGE:
                        found.append(f"{relative}:{node.lineno} calls {name}")
    return found


def test_only_the_action_layer_stores_or_activates_versions():
    assert callers() == []


def test_the_scan_finds_a_direct_call(tmp_path):
    # The check itself can fail: a view written the old way is found, the action layer not.
    (tmp_path / "luascripts").mkdir()
    (tmp_path / "luascripts" / "admin_views.py").write_text(
        "def activate_view(request):\n"
        "    services.activate_version(actor=a, tenant=t, version=v)\n")
    (tmp_path / "chistone_site" / "actions").mkdir(parents=True)
    (tmp_path / "chistone_site" / "actions" / "scripts.py").write_text(
        "activate_version(actor=a, tenant=t, version=v)\n")
    assert callers(tmp_path) == ["luascripts/admin_views.py:2 calls activate_version"]
