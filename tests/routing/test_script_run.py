"""The driver's dispatch: every effect the engine can yield has the Effects method that
answers it, and anything else is refused (routing.script_run)."""

from __future__ import annotations

import typing

import pytest

from luascripts.engine.effects import Effect, LimitAnswer, LimitCheck, ReadBody
from routing.script_run import _ANSWERERS, answer


def test_every_effect_type_has_an_answerer() -> None:
    assert set(_ANSWERERS) == set(typing.get_args(Effect))


class _Recorder:
    """Effects that say which method answered (a unit test of the dispatch only: the real
    effects are tested in test_gateway.py and test_stubs.py)."""

    def __getattr__(self, name):
        async def method(*args):
            return (name, args)
        return method


async def test_the_answer_comes_from_the_method_for_the_effects_type() -> None:
    check = LimitCheck("k", 5, 60)
    assert await answer(_Recorder(), check) == ("limit", (check,))
    assert await answer(_Recorder(), ReadBody()) == ("read_body", ())


async def test_an_unknown_effect_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown effect"):
        await answer(_Recorder(), LimitAnswer(True, 5, 4, 0.0))  # an answer, not an effect
