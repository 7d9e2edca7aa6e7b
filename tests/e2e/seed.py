"""Seed a gateway database from a JSON spec: `python -m tests.e2e.seed spec.json`.

Runs in its own process with the server's DATABASE_URL, through the same services and
actions as the admin and the API. The spec: {"tenants": [{"slug", "domains", "path_prefix",
"backends": [{"name", "url", ...options}], "script": "lua source or null"}]}.
"""

from __future__ import annotations

import json
import os
import sys


def main(path: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
    import django

    django.setup()
    from chistone_site import actions
    from tenants import services
    from tenants.audit import Actor

    actor = Actor.system("e2e")
    with open(path) as fh:
        spec = json.load(fh)
    for item in spec["tenants"]:
        tenant = services.create_tenant(
            actor=actor, slug=item["slug"], name=item["slug"].title(),
            domains=item.get("domains", []), path_prefix=item.get("path_prefix", ""))
        for backend in item.get("backends", []):
            options = dict(backend)
            services.create_backend(actor=actor, tenant=tenant, name=options.pop("name"),
                                    url=options.pop("url"), **options)
        if item.get("script"):
            published = actions.do_publish_script(actor=actor, tenant=tenant,
                                                  source=item["script"], allow_draft=True)
            if not published.version.valid:
                raise SystemExit(f"script for {item['slug']} is invalid: "
                                 f"{published.version.errors}")
            actions.do_activate_version(actor=actor, tenant=tenant, version=published.version)
    print("seeded", len(spec["tenants"]), "tenants")


if __name__ == "__main__":
    main(sys.argv[1])
