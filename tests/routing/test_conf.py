"""routing.conf: the data plane's settings, their defaults and their parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.conf import GATEWAY_SETTINGS, build_conf, default, get_conf
from routing.setting import SettingError, read_set


def test_defaults_come_from_the_declarations():
    conf = build_conf({})
    assert conf.passive_failures == default("PASSIVE_FAILURES") == 3
    assert conf.upstream_total_timeout_s == 300.0
    assert conf.trusted_proxies == () and conf.proxies.header == "x-forwarded-for"
    assert conf.lua_limit_overrides() == {}
    assert conf.snapshot_file is None and conf.metrics_dir is None


def test_the_environment_is_parsed_by_type():
    env = {"CHISTONE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7", "CHISTONE_ACCESS_LOG": "off",
           "CHISTONE_RETRY_BUDGET_RATIO": "0.5", "CHISTONE_LUA_REQUEST_MS": "4000",
           "CHISTONE_FORWARDED_HEADER": "Forwarded", "CHISTONE_RETRIES": "",
           "UNRELATED": "x"}
    values = read_set(GATEWAY_SETTINGS, env)
    assert values == {"TRUSTED_PROXIES": ("10.0.0.0/8", "192.0.2.7"), "ACCESS_LOG": False,
                      "RETRY_BUDGET_RATIO": 0.5, "LUA_REQUEST_MS": 4000.0,
                      "FORWARDED_HEADER": "forwarded"}
    conf = build_conf(values, var_dir=Path("/srv/chistone"))
    assert conf.proxies.trusts("192.0.2.7") and not conf.proxies.trusts("192.0.2.8")
    assert conf.lua_limit_overrides() == {"request_cpu_ms": 4000.0}
    assert conf.snapshot_file == Path("/srv/chistone/snapshot.json")
    assert conf.retries == 1  # empty means unset


@pytest.mark.parametrize("variable,value,message", [
    ("CHISTONE_RETRIES", "two", "CHISTONE_RETRIES must be a whole number, not 'two'"),
    ("CHISTONE_HEALTH_INTERVAL_S", "5s", "CHISTONE_HEALTH_INTERVAL_S must be a number"),
    ("CHISTONE_ACCESS_LOG", "maybe", "CHISTONE_ACCESS_LOG must be 1/true/yes/on or"),
    ("CHISTONE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local",
     "CHISTONE_TRUSTED_PROXIES 'proxy.local' is not an IP network"),
    ("CHISTONE_FORWARDED_HEADER", "x-real-ip",
     "CHISTONE_FORWARDED_HEADER must be x-forwarded-for or forwarded, not 'x-real-ip'"),
])
def test_a_bad_value_names_the_variable_and_the_accepted_form(variable, value, message):
    with pytest.raises(SettingError, match=message.replace("(", r"\(")):
        read_set(GATEWAY_SETTINGS, {variable: value})


def test_get_conf_reads_settings_chistone_and_follows_overrides(settings):
    settings.CHISTONE = {"RETRIES": 4}
    assert get_conf().retries == 4
    settings.CHISTONE = {}
    assert get_conf().retries == default("RETRIES")
    settings.CHISTONE = {"TRUSTED_PROXIES": ["not-a-net"]}
    with pytest.raises(SettingError, match="not-a-net"):
        get_conf()


def test_lua_limits_reach_the_scripts_the_snapshot_loads(settings):
    from luascripts.engine import Limits
    from routing.snapshot import script_limits

    settings.CHISTONE = {"LUA_REQUEST_MS": 4000, "LUA_MEMORY_BYTES": 64 << 20}
    limits = script_limits()
    assert (limits.request_cpu_ms, limits.memory_bytes) == (4000.0, 64 << 20)
    assert script_limits({"memory_bytes": 8 << 20}).memory_bytes == 8 << 20  # the tenant's own
    settings.CHISTONE = {}
    assert script_limits() == Limits()
