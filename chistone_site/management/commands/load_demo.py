"""`manage.py load_demo`: demo tenants, backends that really answer, scripts, an admin login.

Idempotent: running it again leaves existing demo objects alone. Everything goes through the
same services and actions as the admin and the API (chistone_site.actions for the scripts).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from chistone_site import actions
from chistone_site.demo.backends import demo_url
from tenants import services
from tenants.audit import Actor
from tenants.models import Backend, Tenant

SCRIPTS = Path(__file__).resolve().parents[2] / "demo" / "scripts"

DEMO_TENANTS = [
    {
        "slug": "acme", "name": "Acme (version routing)", "domains": ["acme.localhost"],
        "path_prefix": "", "backends": {"users-v1": "users-v1", "users-v2": "users-v2",
                                         "legacy": "legacy"},
    },
    {
        "slug": "globex", "name": "Globex (canary)", "domains": [], "path_prefix": "/globex",
        "backends": {"stable": "stable", "canary": "canary"},
    },
    {
        "slug": "initech", "name": "Initech (legacy selector)", "domains": ["initech.localhost"],
        "path_prefix": "", "backends": {"legacy": "legacy", "modern": "users-v2"},
    },
]


class Command(BaseCommand):
    help = "Load demo tenants, backends and scripts, and create an admin login."

    def handle(self, *args, **options):
        actor = Actor.system("load_demo")
        for spec in DEMO_TENANTS:
            self._tenant(actor, spec)
        self._admin()

    @transaction.atomic
    def _tenant(self, actor: Actor, spec: dict) -> None:
        tenant = Tenant.objects.filter(slug=spec["slug"]).first()
        if tenant is None:
            tenant = services.create_tenant(actor=actor, slug=spec["slug"], name=spec["name"],
                                            domains=spec["domains"],
                                            path_prefix=spec["path_prefix"])
        for name, demo_name in spec["backends"].items():
            if not Backend.objects.filter(tenant=tenant, name=name).exists():
                services.create_backend(actor=actor, tenant=tenant, name=name,
                                        url=demo_url(demo_name), health_check_path="/healthz")
        source = (SCRIPTS / f"{spec['slug']}.lua").read_text()
        published = actions.do_publish_script(actor=actor, tenant=tenant, source=source,
                                              message="demo script", allow_draft=True)
        version = published.version
        if not version.valid:
            self.stderr.write(f"demo script for {tenant.slug} is invalid: {version.errors}")
            return
        if tenant.active_version_id is None:
            actions.do_activate_version(actor=actor, tenant=tenant, version=version)
        where = ", ".join(spec["domains"]) or f"any host, prefix {spec['path_prefix']}"
        self.stdout.write(f"tenant {tenant.slug:8} v{version.number} ({where})")

    def _admin(self) -> None:
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("admin login: user 'admin' exists (password unchanged)")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@example.com", password)
        self.stdout.write(f"admin login: user 'admin', password '{password}' (shown once)")
