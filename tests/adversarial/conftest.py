"""Fixtures of the adversarial suite.

`live`: the one real server (session scoped; see live.py). Tests that use it also take
`same_worker`, which asserts that the gateway's worker process was not replaced during the
test: a hostile script, client or backend must never crash or hang a worker.
"""

from __future__ import annotations

import os

import pytest

from tests.adversarial import live as livemod
from tests.serving import prepare_database, server_env, start_serve

WATCHDOG_S = 3.0  # the live server's worker watchdog (`serve --hang-timeout`)


@pytest.fixture(scope="session")
def adv_farm():
    farm = livemod.make_farm()
    yield farm
    farm.close()


@pytest.fixture(scope="session")
def live(adv_farm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adversarial")
    db = tmp / "adv.sqlite3"
    dead_proxy = livemod.dead_url()
    env = server_env(
        f"sqlite:///{db}", tmp,
        CHISTONE_UPSTREAM_TOTAL_TIMEOUT_MS="3000",
        CHISTONE_PASSIVE_FAILURES="50",  # no ejection: every fault is seen as it is
        CHISTONE_PASSIVE_COOLDOWN_S="0.5",
        CHISTONE_LOGIN_FAILURE_LIMIT="3",
        CHISTONE_ACCESS_LOG="1",
        # A proxy from the environment would swallow every upstream request if it were used.
        HTTP_PROXY=dead_proxy, http_proxy=dead_proxy, ALL_PROXY=dead_proxy,
    )
    prepare_database(env, livemod.spec(adv_farm), tmp)
    key = livemod.create_api_key(env, "adversarial-ci", "read,write,activate")
    served = start_serve(env, tmp / "serve.log", "--workers", "1", "--hang-timeout",
                         str(WATCHDOG_S))
    try:
        served.wait_ready(workers=1)
    except Exception:
        served.stop()
        raise
    yield livemod.Live(served=served, farm=adv_farm, db=db, api_key=key)
    served.stop()


@pytest.fixture
def same_worker(live):
    """The worker that served the test is the one that serves after it (no crash, no restart)."""
    before = live.worker_pids()
    assert before, "no gateway worker is running"
    yield
    after = live.worker_pids()
    assert after == before, f"gateway worker restarted: {before} -> {after}\n" \
                            f"{live.log_text()[-3000:]}"
    assert live.served.process.poll() is None, "the supervisor exited"
    assert all(os.path.exists(f"/proc/{pid}") for pid in after)


# -- control-plane fixtures, shared with the admin and API tests ------------------------------
# (assigned rather than imported, so pytest registers them here and linters see them used)
from tests.admin import conftest as _admin  # noqa: E402
from tests.api import conftest as _api  # noqa: E402

system, superuser, acme, globex = _admin.system, _admin.superuser, _admin.acme, _admin.globex
operator, op_client, publish = _admin.operator, _admin.op_client, _admin.publish
make_key, client_for = _api.make_key, _api.client_for
