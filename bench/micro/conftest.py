"""Micro-benchmark fixtures: Django on a temporary SQLite database, seeded through the services.

Importing this sets DATABASE_URL to a file in a new temporary directory (never the project's
database, whatever the environment says) and calls django.setup(); the directory goes away at
the end of the session. `tenant_database(n)` gives a database holding n seeded tenants (made
once per session from a migrated template) and makes it Django's default connection.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from bench.micro import support

_TMP = Path(tempfile.mkdtemp(prefix="chistone-micro-"))
_TEMPLATE = support.use_temp_database(_TMP)
support.migrate()
_DATABASES: dict[int, Path] = {}


def _switch(path: Path) -> None:
    from django.db import connections

    conn = connections["default"]
    conn.close()
    conn.settings_dict["NAME"] = str(path)


def tenant_database(n: int) -> Path:
    """A database with tenants t0..t<n-1>, each with an active 50-route script; now default."""
    path = _DATABASES.get(n)
    if path is None:
        _switch(_TEMPLATE)
        path = _TMP / f"tenants-{n}.sqlite3"
        shutil.copyfile(_TEMPLATE, path)
        _switch(path)
        started = time.perf_counter()
        support.seed_tenants(n)
        print(f"\n[seeded {n} tenant(s) through the services in "
              f"{time.perf_counter() - started:.1f} s]")
        _DATABASES[n] = path
    _switch(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _cleanup():
    yield
    from django.db import connections

    connections.close_all()
    shutil.rmtree(_TMP, ignore_errors=True)
