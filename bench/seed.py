"""Seed the benchmark tenant through the project's services (scenarios 6 to 8).

One tenant answering for the bench domain, one backend pointing at the bench backend, and an
active script: one middleware and ROUTES routes (`GET /api/v1/svc<i>/items/{id}`), each proxying
to that backend. Run against an already migrated database:

    DJANGO_SETTINGS_MODULE=chistone_site.settings DATABASE_URL=sqlite:////tmp/x/bench.sqlite3 \\
        .venv/bin/python bench/seed.py --backend-url http://127.0.0.1:8080 --domain bench.local
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Scenario 13 and app_cpu.py --rate-limit: the same script behind a Redis-backed rate limit
# high enough that every request passes (each one is a round trip to Redis). A one-second
# window, so the log is in its steady state from the start (each call also drops the entries
# that left the window), as a busy limit is, whatever the run's length.
RATE_LIMIT = 'chi.use(middleware.rate_limit{rate = 100000, per = 1, key = "ip"})\n'


def script_source(routes: int, backend: str = "backend") -> str:
    lines = [
        "-- Benchmark script: one middleware, then the routes, matched by the gateway.",
        "chi.use(function(req, next)",
        "  return next(req)",
        "end)",
        "",
    ]
    for i in range(routes):
        lines.append(f'chi.get("/api/v1/svc{i}/items/{{id}}", function(req) '
                     f'return proxy("{backend}") end)')
    return "\n".join(lines) + "\n"


def seed(*, backend_url: str, domain: str, routes: int, slug: str = "bench",
         rate_limit: bool = False) -> str:
    import django

    django.setup()
    from luascripts.services import activate_version, publish_version
    from tenants import services
    from tenants.audit import Actor

    actor = Actor.system("bench")
    tenant = services.create_tenant(actor=actor, slug=slug, name="Benchmark", domains=[domain])
    services.create_backend(actor=actor, tenant=tenant, name="backend", url=backend_url)
    source = (RATE_LIMIT if rate_limit else "") + script_source(routes)
    version, _created = publish_version(actor=actor, tenant=tenant, source=source,
                                        message="benchmark")
    if not version.valid:
        raise SystemExit(f"the benchmark script is invalid: {version.errors}")
    activate_version(actor=actor, tenant=tenant, version=version)
    return f"tenant {slug} ({domain}) -> {backend_url}, script v{version.number}, {routes} routes"


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed the chistone benchmark tenant.")
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--domain", default="bench.local")
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--rate-limit", action="store_true",
                        help="behind middleware.rate_limit (needs CHISTONE_REDIS_URL to serve)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
    sys.path.insert(0, str(ROOT))
    print(seed(backend_url=args.backend_url, domain=args.domain, routes=args.routes,
               rate_limit=args.rate_limit))


if __name__ == "__main__":
    main()
