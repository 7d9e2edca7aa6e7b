"""The demo's acme script verifies a JWT on /me, minted exactly as the README tour does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from luascripts.engine import ProxyAction, load_script
from luascripts.engine.script import ScriptRun
from routing.jwt_verify import verify_effect
from tests.luascripts.engine.support import request

ROOT = Path(__file__).resolve().parents[2]
ACME = (ROOT / "chistone_site" / "demo" / "scripts" / "acme.lua").read_text()
# The README's one-liner (same secret, issuer and claims).
MINT = ("import time; from joserfc import jwt; from joserfc.jwk import OctKey; "
        "print(jwt.encode({'alg': 'HS256'}, {'sub': 'alice', 'iss': 'chistone-demo', "
        "'exp': int(time.time()) + 3600}, OctKey.import_key(b'chistone-demo-secret-change-me!!')))")


def through(script, headers):
    step = script.start(request("/me", headers=headers, host="acme.localhost"))
    while isinstance(step, ScriptRun):
        step = step.resume(verify_effect(step.effect, None))
    return step


def test_the_readme_token_opens_me_and_no_token_is_401() -> None:
    token = subprocess.run([sys.executable, "-c", MINT], capture_output=True, text=True,
                           check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    assert "chistone-demo-secret-change-me!!" in readme and "/me" in readme
    script = load_script(ACME, tenant="acme", backend_names=["users-v1", "users-v2", "legacy"])
    ok = through(script, {"authorization": f"Bearer {token}"})
    assert ok.action == ProxyAction(("users-v2",), path="/me")
    assert ok.request_headers == {"x-user": "alice"}
    missing = through(script, {})
    assert missing.action.status == 401
    assert missing.patch.headers == (("www-authenticate", "Bearer"),)
