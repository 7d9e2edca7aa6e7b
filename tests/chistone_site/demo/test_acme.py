"""The demo's acme tenant rate-limits /status (the README tour shows its 429)."""

from __future__ import annotations

from pathlib import Path

from luascripts.engine import RejectAction, RespondAction, ScriptRequest, load_script
from luascripts.engine.effects import LimitCheck
from luascripts.engine.script import ScriptRun
from routing.shared_state import LocalStore
from routing.stubs import run_sync

ACME = Path(__file__).resolve().parents[3] / "chistone_site" / "demo" / "scripts" / "acme.lua"


def test_acme_status_allows_five_a_minute_per_client_then_429() -> None:
    script = load_script(ACME.read_text(), tenant="acme",
                         backend_names=["users-v1", "users-v2", "legacy"])
    store = LocalStore()

    def get(client_ip: str):
        step = script.start(ScriptRequest("GET", "/status", "", "acme.localhost", "http",
                                          client_ip, {}, "acme", "rid"))
        while isinstance(step, ScriptRun):
            ask = store.limit if isinstance(step.effect, LimitCheck) else store.shared
            step = step.resume(run_sync(ask("acme", step.effect)))
        return step

    answers = [get("192.0.2.1") for _ in range(6)]
    assert [type(a.action) for a in answers] == [RespondAction] * 5 + [RejectAction]
    assert answers[-1].action.status == 429
    assert dict(answers[-1].patch.headers)["retry-after"] == "60"
    assert isinstance(get("192.0.2.2").action, RespondAction)  # per client
