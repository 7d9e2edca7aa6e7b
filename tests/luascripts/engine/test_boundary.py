"""The declared boundary between host and sandbox (luascripts/engine/boundary.py)."""

from __future__ import annotations

import pytest

from luascripts.engine import Limits, boundary
from luascripts.engine.runtime import Runtime


def test_records_number_their_fields_from_one() -> None:
    assert boundary.PROXY.kind == 1
    assert boundary.PROXY.fields[boundary.PROXY.path - 1] == "path"
    assert boundary.HEAD_ANSWER.pack(status=200, backend="a") == (200, None, "a")
    assert boundary.BODY_ANSWER.unpack((b"x",)) == {"body": b"x", "error": None}
    with pytest.raises(KeyError, match="no field"):
        boundary.CALL_ANSWER.pack(stauts=1)


def test_the_action_comes_last_after_the_patch() -> None:
    layout = boundary.lua_layout()
    assert layout["offsets"]["action"] == len(boundary.RESULT) + len(boundary.PATCH)
    assert all(len(record) <= boundary.ACTION_SLOTS for record in boundary.ACTIONS.values())
    assert {record.fields[0] for record in boundary.ACTIONS.values()} == {"kind"}
    assert all(record.fields[0] == "op" for record in boundary.EFFECTS.values())


def test_the_sandbox_reads_limits_and_layout_by_declared_name_only() -> None:
    runtime = Runtime(Limits(max_calls=3))
    try:
        k = runtime.k
        assert k.limits.max_calls == 3
        assert k.layout.proxy.body == boundary.PROXY.body
        reader = runtime.lua.eval("function(t, k) return pcall(function() return t[k] end) end")
        ok, message = reader(k.limits, "max_call")
        assert ok is False and "limits has no field 'max_call'" in message
        ok, message = reader(k.layout.proxy, "paht")
        assert ok is False and "layout.proxy has no field 'paht'" in message
    finally:
        runtime.close()


def test_limits_cross_as_one_table_of_every_field() -> None:
    limits = Limits()
    assert set(limits.to_lua()) == set(Limits.__slots__)
