"""Shared set-up for the micro-benchmarks and bench/micro/memory.py.

- `use_temp_database(dir)`: point Django at a fresh SQLite file in `dir` (whatever
  DATABASE_URL says) and call django.setup(); `migrate()` creates the schema.
- `seed_tenants(n)`: n tenants through the project's services (create_tenant, create_backend,
  publish_version, activate_version), each with its own domain, one backend and the benchmark
  script (one middleware and 50 routes, bench/seed.py), so each gets its own Lua runtime.
- `mixed_script(routes)`: a script whose routes mix every pattern kind (static, `{param}`,
  `{param:regexp}`, catch-all mount, sub-routers), for the matching benchmarks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.seed import script_source  # noqa: E402

ROUTES = 50
BACKEND_URL = "http://127.0.0.1:9"  # never contacted: the benchmarks do not proxy
HEADERS = {
    "host": "t0.bench.local", "user-agent": "chistone-bench/1.0 (wrk)",
    "accept": "application/json", "accept-encoding": "gzip, deflate",
    "accept-language": "en-GB,en;q=0.9", "x-request-id": "4f9c2b1e-7d3a-4c55-9e0b-bench",
    "authorization": "Bearer bench-token-0123456789abcdef",
    "cookie": "session=abc123def456; theme=dark",
}


def domain(i: int) -> str:
    return f"t{i}.bench.local"


def use_temp_database(directory: str | Path, name: str = "bench.sqlite3") -> Path:
    """Configure Django on the SQLite file `directory/name`; returns the file's path."""
    db = Path(directory) / name
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["CHISTONE_VAR_DIR"] = str(directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chistone_site.settings"
    import django

    django.setup()
    import logging

    # Each service call writes an audit record and may log; keep benchmark output quiet.
    logging.getLogger("chistone").setLevel(logging.WARNING)
    return db


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def seed_tenants(n: int, *, routes: int = ROUTES, start: int = 0) -> None:
    """Tenants t<start>..t<start+n-1> through the services, each with its own active script."""
    from luascripts.services import activate_version, publish_version
    from tenants import services
    from tenants.audit import Actor

    actor = Actor.system("bench")
    source = script_source(routes)
    for i in range(start, start + n):
        tenant = services.create_tenant(actor=actor, slug=f"t{i}", name=f"Tenant {i}",
                                        domains=[domain(i)])
        services.create_backend(actor=actor, tenant=tenant, name="backend", url=BACKEND_URL)
        version, _created = publish_version(actor=actor, tenant=tenant, source=source,
                                            message="bench")
        if not version.valid:
            raise RuntimeError(f"the benchmark script is invalid: {version.errors}")
        activate_version(actor=actor, tenant=tenant, version=version)


def bench_request_path(routes: int = ROUTES) -> str:
    """The path scenario 6 requests: route 40 of 50 (or 80 % down a longer table)."""
    return f"/api/v1/svc{routes * 4 // 5}/items/12345"


def mixed_script(routes: int) -> str:
    """One middleware, then `routes` routes of every kind, in sub-routers of ten."""
    lines = [
        "chi.use(function(req, next) return next(req) end)",
        "chi.mount('/legacy', 'legacy')",
        "chi.get('/health', function(req) return respond(200, 'ok') end)",
    ]
    made, group = 2, 0
    while made < routes:
        lines.append(f"chi.route('/svc{group}', function(r)")
        for kind in range(min(10, routes - made)):
            if kind % 3 == 0:
                lines.append(f"  r.get('/items{kind}', function(req) return proxy('catalog') end)")
            elif kind % 3 == 1:
                lines.append(f"  r.get('/items{kind}/{{id}}', function(req) "
                             "return proxy('orders') end)")
            else:
                lines.append(f"  r.post('/items{kind}/{{id:[0-9]+}}/edit', function(req) "
                             "return proxy('catalog') end)")
            made += 1
        lines.append("end)")
        group += 1
    return "\n".join(lines) + "\n"


MIXED_BACKENDS = ("catalog", "legacy", "orders")


def mixed_paths(routes: int) -> list[tuple[str, str]]:
    """Requests hitting every kind in the last sub-router, the mount, and a 404."""
    last = (routes - 2 - 1) // 10
    return [("GET", f"/svc{last}/items0"), ("GET", f"/svc{last}/items1/12345"),
            ("POST", f"/svc{last}/items2/42/edit"), ("GET", "/legacy/some/old/page"),
            ("GET", "/nowhere/at/all")]
