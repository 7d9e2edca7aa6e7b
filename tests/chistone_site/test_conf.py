"""chistone_site.conf: the settings outside the data plane, read from the environment once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chistone_site.conf import (
    DEV_SECRET_KEY,
    build_serve_conf,
    client_environment,
    django_environment,
    get_conf,
    process_environment,
    variable,
)
from routing.setting import SettingError

ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_environment_gives_the_documented_defaults():
    env = django_environment({})
    assert env.secret_key == DEV_SECRET_KEY and env.debug is False
    assert env.var_dir == ROOT / "var"
    assert env.database_url == f"sqlite:///{ROOT / 'var' / 'chistone.sqlite3'}"
    assert (env.ssl_redirect, env.secure_cookies, env.hsts_seconds) == (False, False, 0)
    assert env.chistone == {}
    serve = build_serve_conf({})
    assert (serve.host, serve.data_port, serve.control_port) == ("127.0.0.1", 8000, 8001)
    assert serve.workers == (os.cpu_count() or 1) and serve.server == "daphne"
    process = process_environment({})
    assert (process.log_format, process.drain_timeout_s, process.heartbeat_slot) == \
        ("json", 20.0, "")
    assert client_environment({}) == client_environment({"CHISTONE_URL": ""})


def test_settings_chistone_holds_what_the_environment_sets_for_serve_and_the_data_plane():
    env = django_environment({"CHISTONE_DATA_PORT": "9000", "CHISTONE_RETRIES": "0",
                              "CHISTONE_SECRET_KEY": "s" * 50, "CHISTONE_VAR_DIR": "/srv/c",
                              "CHISTONE_HSTS_SECONDS": "60"})
    assert env.chistone == {"DATA_PORT": 9000, "RETRIES": 0}
    assert env.secret_key == "s" * 50 and env.hsts_seconds == 60
    assert env.database_url == "sqlite:////srv/c/chistone.sqlite3"


@pytest.mark.parametrize("variable_name,value,message", [
    ("CHISTONE_DATA_PORT", "http", "must be a whole number, not 'http'"),
    ("CHISTONE_CONTROL_PORT", "70000", "must be a port number (1-65535), not '70000'"),
    ("CHISTONE_SERVER", "gunicorn", "must be daphne or uvicorn, not 'gunicorn'"),
    ("CHISTONE_LISTEN", "fair", "must be reuseport or shared, not 'fair'"),
    ("CHISTONE_SSL_REDIRECT", "sure", "must be 1/true/yes/on or 0/false/no/off"),
    ("CHISTONE_LOG_LEVEL", "loud", "must be one of DEBUG, INFO"),
])
def test_a_bad_value_is_refused_with_its_name(variable_name, value, message):
    with pytest.raises(SettingError, match=f"{variable_name} {message}".replace("(", r"\(")
                       .replace(")", r"\)")):
        django_environment({variable_name: value})


def test_a_bad_value_stops_django_at_start_with_a_clear_message():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CHISTONE_DATA_PORT": "http"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ImproperlyConfigured: CHISTONE_DATA_PORT must be a whole number, not 'http'." \
        in done.stderr


def test_get_conf_follows_settings_overrides(settings):
    settings.CHISTONE = {"CONTROL_PORT": 9101, "WORKERS": 3}
    assert (get_conf().control_port, get_conf().workers) == (9101, 3)
    settings.CHISTONE = {}
    assert get_conf().control_port == 8001


def test_variable_names():
    assert variable("DATA_PORT") == "CHISTONE_DATA_PORT"
    assert variable("DATABASE_URL") == "DATABASE_URL"
    with pytest.raises(KeyError):
        variable("NOPE")
