"""One home for each setting: only the accessors read settings.CHISTONE or CHISTONE_* variables,
and docs/operations.md lists every declared setting with its default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chistone_site.conf import ALL_SETTINGS, markdown_tables

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["chistone_site", "routing", "tenants", "luascripts", "bench", "manage.py"]
# The accessors: the declarations and the one reader of the environment.
ACCESSORS = {"routing/setting.py", "routing/conf.py", "chistone_site/conf.py"}
ENV_READERS = {"get", "pop", "setdefault", "__getitem__"}


def _is_os_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ` (from os import environ)."""
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _key_is_suspect(node: ast.AST | None) -> bool:
    """A CHISTONE_* literal, or a key the scanner cannot see (a name, an f-string...)."""
    if node is None:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.startswith("CHISTONE_") or node.value == "CHISTONE"
    return True


def violations(source: str) -> list[str]:
    """Where `source` reads settings.CHISTONE or a CHISTONE_* environment variable."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr == "CHISTONE":
            found.append(f"line {line}: .CHISTONE")
        elif isinstance(node, ast.Call):
            func = node.func
            first = node.args[0] if node.args else None
            if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value == "CHISTONE":
                    found.append(f"line {line}: getattr(..., 'CHISTONE')")
            elif isinstance(func, ast.Attribute) and func.attr in ENV_READERS \
                    and _is_os_environ(func.value) and _key_is_suspect(first):
                found.append(f"line {line}: os.environ.{func.attr}({ast.unparse(first or node)})")
            elif isinstance(func, ast.Attribute) and func.attr == "getenv" \
                    and isinstance(func.value, ast.Name) and func.value.id == "os" \
                    and _key_is_suspect(first):
                found.append(f"line {line}: os.getenv(...)")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and _is_os_environ(node.value) and _key_is_suspect(node.slice):
            found.append(f"line {line}: os.environ[{ast.unparse(node.slice)}]")
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops) \
                and any(_is_os_environ(c) for c in node.comparators) \
                and _key_is_suspect(node.left):
            found.append(f"line {line}: ... in os.environ")
    return found


def _modules() -> list[Path]:
    paths = []
    for entry in SCANNED:
        path = ROOT / entry
        paths += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [p for p in paths if "migrations" not in p.parts]


@pytest.mark.parametrize("snippet", [
    'import os\nos.environ.get("CHISTONE_DATA_PORT")',
    'import os\nos.environ["CHISTONE_DATA_PORT"]',
    'import os\nos.getenv("CHISTONE_X", "1")',
    'import os\nVAR = "CHISTONE_X"\nos.environ.get(VAR)',
    'from os import environ\nenviron.get(f"CHISTONE_{key}")',
    'import os\n"CHISTONE_X" in os.environ',
    'from django.conf import settings\nsettings.CHISTONE["HOST"]',
    'from django.conf import settings\ngetattr(settings, "CHISTONE", {})',
])
def test_the_scanner_sees_every_way_of_reading(snippet):
    assert violations(snippet), snippet


@pytest.mark.parametrize("snippet", [
    'import os\nos.environ.get("PYTHONPATH")',
    'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")',
    'import os\nenv = {**os.environ, "CHISTONE_DATA_PORT": "8000"}',  # for a child process
    'from chistone_site.conf import get_conf\nget_conf().data_port',
])
def test_the_scanner_lets_ordinary_code_through(snippet):
    assert violations(snippet) == []


def test_only_the_accessors_read_chistone_settings_or_variables():
    offenders = {}
    for path in _modules():
        relative = path.relative_to(ROOT).as_posix()
        if relative in ACCESSORS:
            continue
        found = violations(path.read_text())
        if found:
            offenders[relative] = found
    assert offenders == {}, (
        "Read settings through routing.conf / chistone_site.conf (declare new variables "
        f"there): {offenders}")


def test_every_setting_is_declared_once():
    variables = [setting.variable for setting in ALL_SETTINGS]
    assert len(variables) == len(set(variables))


def test_operations_doc_lists_every_setting_with_its_default():
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert markdown_tables() in doc, (
        "docs/operations.md's settings tables differ from the declarations: paste the "
        "output of `python -m chistone_site.conf`")
    for setting in ALL_SETTINGS:
        assert f"`{setting.variable}`" in doc


def test_the_readme_names_only_declared_variables():
    readme = (ROOT / "README.md").read_text()
    declared = {setting.variable for setting in ALL_SETTINGS}
    named = set(re.findall(r"`(CHISTONE_[A-Z_]+|DATABASE_URL)`", readme))
    assert named and named <= declared, named - declared
