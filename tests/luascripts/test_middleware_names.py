"""Middleware labels of the dry run name local functions from the source."""

from __future__ import annotations

from luascripts.middleware_names import name_from_line, name_labels

SOURCE = """\
local function auth(req, next)
  return next(req)
end
local tag = function(req, next) return next(req) end
function global_mw(req, next) return next(req) end
chi.use(auth, tag, global_mw, function(req, next) return next(req) end)
"""


def test_locals_are_named_from_their_definition_line_globals_keep_their_name() -> None:
    labels = ["line 1", "line 4", "global_mw (line 5)", "line 6"]
    assert name_labels(labels, SOURCE) == [
        "auth (line 1)", "tag (line 4)", "global_mw (line 5)", "anonymous (line 6)"]


def test_a_line_with_two_functions_names_neither() -> None:
    assert name_from_line("local a = function() end; local b = function() end") is None
    assert name_from_line('M["check"] = function(req, next)') == "check"
    assert name_labels(["line 9"], SOURCE) == ["anonymous (line 9)"]  # past the end
