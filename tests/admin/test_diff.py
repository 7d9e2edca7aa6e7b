"""Diffs between any two versions, side by side and unified, and against the active one."""

from __future__ import annotations

import pytest
from django.urls import reverse

from luascripts import admin_diff

from .conftest import BAD, GOOD, GOOD2

OLD = "a\nb\nc\nd\n"
NEW = "a\nB\nc\nd\ne\n"


def test_unified_rows_are_git_style_hunks():
    rows = admin_diff.unified(OLD, NEW)
    assert [(r.kind, r.old_no, r.new_no, r.text) for r in rows] == [
        ("hunk", None, None, "@@ -1,4 +1,5 @@"),
        ("context", 1, 1, "a"),
        ("delete", 2, None, "b"),
        ("insert", None, 2, "B"),
        ("context", 3, 3, "c"),
        ("context", 4, 4, "d"),
        ("insert", None, 5, "e"),
    ]
    assert admin_diff.unified_text(OLD, NEW, old_name="v1", new_name="v2").startswith(
        "--- v1\n+++ v2\n@@ -1,4 +1,5 @@\n a\n-b\n+B\n")


def test_side_by_side_pairs_lines_and_folds_long_unchanged_runs():
    rows = admin_diff.side_by_side(OLD, NEW)
    assert [(r.kind, r.old_no, r.old, r.new_no, r.new) for r in rows] == [
        ("equal", 1, "a", 1, "a"),
        ("replace", 2, "b", 2, "B"),
        ("equal", 3, "c", 3, "c"),
        ("equal", 4, "d", 4, "d"),
        ("insert", None, "", 5, "e"),
    ]
    long_old = "\n".join(f"line {n}" for n in range(1, 31)) + "\nend\n"
    long_new = long_old.replace("end", "END")
    rows = admin_diff.side_by_side(long_old, long_new)
    assert [r.kind for r in rows].count("skip") == 1
    assert rows[0].kind == "skip" and "27 unchanged lines" in rows[0].old
    assert rows[-1] == admin_diff.SideRow("replace", 31, "end", 31, "END")


def test_stats_and_identical():
    assert admin_diff.stats(OLD, NEW) == admin_diff.DiffStats(added=2, removed=1)
    assert admin_diff.stats(OLD, OLD).identical


def url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


@pytest.mark.django_db
def test_diff_page_defaults_to_newest_against_active(op_client, acme, publish, activate):
    v1 = publish(acme, GOOD)
    publish(acme, GOOD2)
    activate(acme, v1)
    response = op_client.get(url("diff", acme))
    assert response.status_code == 200
    assert (response.context["old"].number, response.context["new"].number) == (1, 2)
    assert response.context["mode"] == "side"
    content = response.content.decode()
    assert "v1 (active)" in content
    assert 'class="insert"' in content and "/users/{id}" in content
    assert response.context["stats"] == admin_diff.DiffStats(added=4, removed=1)
    assert "<strong>+4</strong>" in content


@pytest.mark.django_db
def test_diff_any_two_versions_unified(op_client, acme, publish):
    publish(acme, GOOD)
    publish(acme, BAD)
    publish(acme, GOOD2)
    response = op_client.get(url("diff", acme), {"a": 3, "b": 2, "mode": "unified"})
    assert response.status_code == 200
    assert (response.context["old"].number, response.context["new"].number) == (3, 2)
    rows = response.context["unified_rows"]
    assert rows[0].kind == "hunk"
    assert any(r.kind == "delete" and "/users/{id}" in r.text for r in rows)
    content = response.content.decode()
    assert 'class="u-delete"' in content and 'class="u-insert"' in content


@pytest.mark.django_db
def test_diff_of_unknown_versions_is_404(op_client, acme, publish):
    publish(acme, GOOD)
    assert op_client.get(url("diff", acme), {"a": 1, "b": 7}).status_code == 404


@pytest.mark.django_db
def test_diff_without_versions_is_404(op_client, acme):
    assert op_client.get(url("diff", acme)).status_code == 404
