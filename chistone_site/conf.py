"""Every setting outside the data plane: declared once here, read through typed accessors.

Four tables, by who reads them:

- `DJANGO_SETTINGS`: read from the environment by `chistone_site.settings` only, which turns
  them into Django's own settings (SECRET_KEY, the TLS settings, axes, logging...).
- `SERVE_SETTINGS`: listeners and workers of `manage.py serve`; `settings.py` puts the ones
  that are set into `settings.CHISTONE` (next to the data plane's, `routing.conf`), and
  `get_conf()` reads them back over their defaults, cached, reset on `setting_changed`.
- `PROCESS_SETTINGS`: what a process needs before Django is set up (the worker's log format,
  drain bound and heartbeat slot, the demo backends' address): `process_environment()`.
- `CLIENT_SETTINGS`: the `chistone` CLI's server and key: `client_environment()`.

`ALL_SETTINGS` (these and the data plane's) is what `docs/operations.md` lists; a test keeps
the two in step, and another fails when a module other than the accessors reads
`settings.CHISTONE` or a CHISTONE_* variable. Importing this module imports no Django.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chistone_site.workers.listeners import MODES
from routing.conf import GATEWAY_SETTINGS
from routing.setting import (
    Setting,
    boolean,
    choice,
    comma_list,
    integer,
    merged,
    number,
    read_set,
    text,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "chistone-insecure-development-key-do-not-use-in-production"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {raw!r}")
    return raw.upper()


def _port(raw: str) -> int:
    value = integer(raw)
    if not 0 < value < 65536:
        raise ValueError(f"must be a port number (1-65535), not {raw!r}")
    return value


DJANGO_SETTINGS: tuple[Setting, ...] = (
    Setting("SECRET_KEY", DEV_SECRET_KEY, text, "Django's secret key",
            shown_default="a development key (check `chistone.W002`)"),
    Setting("DEBUG", False, boolean, "Django's debug mode (never in production)"),
    Setting("ALLOWED_HOSTS", ("localhost", "127.0.0.1", "[::1]", "testserver"), comma_list,
            "comma-separated host names the control plane answers to"),
    Setting("CSRF_TRUSTED_ORIGINS", (), comma_list,
            "comma-separated origins (`https://admin.example.com`) allowed to post forms "
            "to the admin from behind a proxy"),
    Setting("VAR_DIR", "", text,
            "writable directory for the SQLite file, the snapshot file and static files",
            shown_default="`var/` next to the `chistone_site` package"),
    Setting("DATABASE_URL", "", text,
            "the database, e.g. `postgres://user@127.0.0.1:5432/chistone` (production; "
            "shared by every gateway node)", env="DATABASE_URL",
            shown_default="SQLite file `$CHISTONE_VAR_DIR/chistone.sqlite3`"),
    Setting("DB_CONN_MAX_AGE", 0, integer,
            "seconds a control-plane database connection is reused (0: one per request)"),
    Setting("LOGIN_THROTTLE", True, boolean, "admin login throttling (django-axes)"),
    Setting("LOGIN_FAILURE_LIMIT", 5, integer,
            "failed admin logins from one client address before it is locked out"),
    Setting("LOGIN_COOLOFF_MINUTES", 15, integer, "how long such a lockout lasts"),
    Setting("LOG_LEVEL", "INFO", _level, "level of the root logger"),
    Setting("SSL_REDIRECT", False, boolean,
            "control plane: redirect plain-HTTP requests to HTTPS (a trusted proxy's "
            "`X-Forwarded-Proto: https` counts as HTTPS)"),
    Setting("SECURE_COOKIES", False, boolean,
            "control plane: session and CSRF cookies only over HTTPS"),
    Setting("HSTS_SECONDS", 0, integer,
            "control plane: `Strict-Transport-Security` max-age (0: no header)"),
    Setting("HSTS_INCLUDE_SUBDOMAINS", False, boolean, "HSTS covers the subdomains too"),
    Setting("HSTS_PRELOAD", False, boolean,
            "HSTS asks to be preloaded by browsers (a commitment: see hstspreload.org)"),
)

SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "127.0.0.1", text, "interface `serve` binds both listeners to"),
    Setting("DATA_PORT", 8000, _port, "data plane (tenant traffic) port"),
    Setting("CONTROL_PORT", 8001, _port, "control plane (admin, API, /metrics) port"),
    Setting("WORKERS", None, integer, "worker processes of `serve`",
            shown_default="number of cores"),
    Setting("SERVER", "daphne", choice("daphne", "uvicorn"), "ASGI server run by each worker"),
    Setting("LISTEN", "", choice(*MODES),
            "how the workers share a listener: `reuseport` (one socket per worker) or "
            "`shared`", shown_default="`reuseport` where the OS has `SO_REUSEPORT`"),
    Setting("WATCHDOG_SECONDS", 5.0, number,
            "seconds a worker's event loop may stop answering before it is replaced"),
)

PROCESS_SETTINGS: tuple[Setting, ...] = (
    Setting("LOG_FORMAT", "json", choice("json", "plain"),
            "`json` (one object per line) or `plain`"),
    Setting("DRAIN_TIMEOUT", 20.0, number,
            "seconds a stopping worker may take to finish requests in flight"),
    Setting("DEMO_HOST", "127.0.0.1", text, "address of the demo backends (`make run`)"),
    Setting("HEARTBEAT_SLOT", "", text, "the worker's shared-memory heartbeat file",
            shown_default="set by `serve` for each worker", internal=True),
)

CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting("URL", "", text, "`chistone` CLI: control-plane URL (`--url`)"),
    Setting("TOKEN", "", text, "`chistone` CLI: API key (`--token`)"),
)

ALL_SETTINGS: tuple[Setting, ...] = (DJANGO_SETTINGS + SERVE_SETTINGS + GATEWAY_SETTINGS
                                     + PROCESS_SETTINGS + CLIENT_SETTINGS)


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


# -- Django's settings ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DjangoEnvironment:
    secret_key: str
    debug: bool
    allowed_hosts: tuple[str, ...]
    csrf_trusted_origins: tuple[str, ...]
    var_dir: Path
    database_url: str
    db_conn_max_age: int
    login_throttle: bool
    login_failure_limit: int
    login_cooloff_minutes: int
    log_level: str
    ssl_redirect: bool
    secure_cookies: bool
    hsts_seconds: int
    hsts_include_subdomains: bool
    hsts_preload: bool
    # settings.CHISTONE: the serve and data-plane settings that the environment sets
    chistone: dict[str, Any]


def django_environment(environ: Mapping[str, str] | None = None) -> DjangoEnvironment:
    """What `chistone_site.settings` needs, read from the environment once (SettingError)."""
    environ = _environ(environ)
    values = {setting.key: setting.read(environ) for setting in DJANGO_SETTINGS}
    var_dir = Path(values["VAR_DIR"]) if values["VAR_DIR"] else BASE_DIR / "var"
    return DjangoEnvironment(
        secret_key=values["SECRET_KEY"],
        debug=values["DEBUG"],
        allowed_hosts=values["ALLOWED_HOSTS"],
        csrf_trusted_origins=values["CSRF_TRUSTED_ORIGINS"],
        var_dir=var_dir,
        database_url=values["DATABASE_URL"] or f"sqlite:///{var_dir / 'chistone.sqlite3'}",
        db_conn_max_age=values["DB_CONN_MAX_AGE"],
        login_throttle=values["LOGIN_THROTTLE"],
        login_failure_limit=values["LOGIN_FAILURE_LIMIT"],
        login_cooloff_minutes=values["LOGIN_COOLOFF_MINUTES"],
        log_level=values["LOG_LEVEL"],
        ssl_redirect=values["SSL_REDIRECT"],
        secure_cookies=values["SECURE_COOKIES"],
        hsts_seconds=values["HSTS_SECONDS"],
        hsts_include_subdomains=values["HSTS_INCLUDE_SUBDOMAINS"],
        hsts_preload=values["HSTS_PRELOAD"],
        chistone=read_set(SERVE_SETTINGS + GATEWAY_SETTINGS, environ),
    )


# -- serve -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeConf:
    host: str
    data_port: int
    control_port: int
    workers: int
    server: str
    listen: str  # "" (reuseport where available), or one of MODES (checked by chistone.E005)
    watchdog_seconds: float


def build_serve_conf(overrides: Mapping[str, Any]) -> ServeConf:
    values = merged(SERVE_SETTINGS, overrides)
    return ServeConf(
        host=str(values["HOST"]),
        data_port=int(values["DATA_PORT"]),
        control_port=int(values["CONTROL_PORT"]),
        workers=int(values["WORKERS"] or os.cpu_count() or 1),
        server=str(values["SERVER"]),
        listen=str(values["LISTEN"] or ""),
        watchdog_seconds=float(values["WATCHDOG_SECONDS"]),
    )


@lru_cache(maxsize=1)
def get_conf() -> ServeConf:
    from django.conf import settings

    return build_serve_conf(getattr(settings, "CHISTONE", None) or {})


def unknown_keys() -> list[str]:
    """Keys of settings.CHISTONE that neither accessor reads (check chistone.E007)."""
    from django.conf import settings

    known = {setting.key for setting in SERVE_SETTINGS + GATEWAY_SETTINGS}
    return sorted(set(getattr(settings, "CHISTONE", None) or {}) - known)


def reset(*, setting: str, **kwargs: Any) -> None:
    """`setting_changed` receiver (connected in chistone_site.apps)."""
    if setting == "CHISTONE":
        get_conf.cache_clear()


# -- before Django, and the CLI --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessEnvironment:
    log_format: str
    drain_timeout_s: float
    demo_host: str
    heartbeat_slot: str


def process_environment(environ: Mapping[str, str] | None = None) -> ProcessEnvironment:
    environ = _environ(environ)
    values = {setting.key: setting.read(environ) for setting in PROCESS_SETTINGS}
    return ProcessEnvironment(log_format=values["LOG_FORMAT"],
                              drain_timeout_s=float(values["DRAIN_TIMEOUT"]),
                              demo_host=values["DEMO_HOST"],
                              heartbeat_slot=values["HEARTBEAT_SLOT"])


@dataclass(frozen=True, slots=True)
class ClientEnvironment:
    url: str | None
    token: str | None


def client_environment(environ: Mapping[str, str] | None = None) -> ClientEnvironment:
    environ = _environ(environ)
    values = {setting.key: setting.read(environ) for setting in CLIENT_SETTINGS}
    return ClientEnvironment(url=values["URL"] or None, token=values["TOKEN"] or None)


def variable(key: str) -> str:
    """The environment variable of a setting, for messages and for child processes."""
    for setting in ALL_SETTINGS:
        if setting.key == key:
            return setting.variable
    raise KeyError(key)


# -- docs ------------------------------------------------------------------------------------

GROUPS: tuple[tuple[str, tuple[Setting, ...]], ...] = (
    ("Control plane (Django)", DJANGO_SETTINGS),
    ("`manage.py serve`", SERVE_SETTINGS),
    ("Data plane", GATEWAY_SETTINGS),
    ("Worker processes and the demo", PROCESS_SETTINGS),
    ("The `chistone` CLI", CLIENT_SETTINGS),
)


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def markdown_tables() -> str:
    """The settings tables of docs/operations.md (`python -m chistone_site.conf` prints them;
    tests/test_settings.py fails when the doc and this differ)."""
    out = []
    for title, table in GROUPS:
        out += [f"#### {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for setting in table:
            default = setting.documented_default
            if not default.startswith("`") and default != "none" and " " not in default:
                default = f"`{default}`"
            meaning = setting.help + (" (internal: set by `serve`)" if setting.internal else "")
            out.append(f"| `{setting.variable}` | {_cell(default)} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown_tables(), end="")
