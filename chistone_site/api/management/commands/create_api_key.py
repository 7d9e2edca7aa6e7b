"""`manage.py create_api_key --name NAME [--tenant SLUG ...] [--scope read,write,activate]
[--expires DAYS]`: prints the new key alone on its last line (shown once, stored hashed)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from chistone_site.api import keys
from tenants.audit import Actor
from tenants.errors import ServiceError
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Create an API key for the REST API and the chistone CLI; prints it once."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Key name, used in audit rows.")
        parser.add_argument("--tenant", action="append", default=[], metavar="SLUG",
                            help="A tenant the key may reach (repeat); none: all tenants.")
        parser.add_argument("--scope", default="read",
                            help="Comma-separated scopes among read, write, activate "
                                 "(default: read).")
        parser.add_argument("--expires", type=int, metavar="DAYS",
                            help="Days until the key expires (default: never).")

    def handle(self, *args, name, tenant, scope, expires, **options):
        slugs = list(dict.fromkeys(tenant))
        tenants = list(Tenant.objects.filter(slug__in=slugs))
        missing = sorted(set(slugs) - {t.slug for t in tenants})
        if missing:
            raise CommandError(f"No such tenant: {', '.join(missing)}.")
        try:
            key, secret = keys.create_api_key(
                actor=Actor.system("manage.py create_api_key"), name=name, scopes=scope,
                tenants=tenants, all_tenants=not slugs, expires_in_days=expires)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        reach = "all tenants" if key.all_tenants else ", ".join(sorted(slugs))
        expiry = key.expires_at.isoformat() if key.expires_at else "never"
        self.stderr.write(
            f"Created API key {key.name!r} (prefix {key.prefix}; scopes "
            f"{','.join(key.scopes)}; {reach}; expires {expiry}). It is shown only once:")
        self.stdout.write(secret)
