"""API key services (create, revoke) and the selector that checks a presented key.

Writes are keyword-only, one transaction, an audit row inside it; the admin, the
`create_api_key` command and the tests all call these.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from chistone_site.api.conf import get_conf
from chistone_site.api.models import SCOPES, ApiKey
from tenants.audit import Actor, record
from tenants.errors import Conflict, InvalidInput
from tenants.models import Tenant

KEY_PREFIX = "chs_"
PREFIX_LENGTH = 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new (prefix, full key). The secret part carries 256 random bits."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def parse_scopes(value: str | Iterable[str]) -> list[str]:
    """`"read,write"` or `["read", "write"]` -> the scopes in canonical order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    wanted = {item.strip().lower() for item in items if item and item.strip()}
    unknown = wanted - set(SCOPES)
    if unknown:
        raise InvalidInput(
            f"Unknown scope(s) {', '.join(sorted(unknown))}; use {', '.join(SCOPES)}.",
            detail={"scopes": [f"Choose from {', '.join(SCOPES)}."]},
        )
    if not wanted:
        raise InvalidInput("A key needs at least one scope.", detail={"scopes": ["Required."]})
    return [scope for scope in SCOPES if scope in wanted]


def create_api_key(
    *,
    actor: Actor,
    name: str,
    scopes: str | Iterable[str],
    tenants: Iterable[Tenant] = (),
    all_tenants: bool = False,
    expires_at: datetime | None = None,
    expires_in_days: int | None = None,
    created_by=None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored nor shown again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("A key needs a name of 1 to 100 characters.",
                           detail={"name": ["1 to 100 characters."]})
    scope_list = parse_scopes(scopes)
    tenant_list = list(tenants)
    if all_tenants and tenant_list:
        raise InvalidInput("A key is either for all tenants or for a list of tenants, not both.",
                           detail={"tenants": ["Leave empty for an all-tenants key."]})
    if not all_tenants and not tenant_list:
        raise InvalidInput("Give the tenants this key may reach, or make it an all-tenants key.",
                           detail={"tenants": ["Required unless all_tenants."]})
    if expires_in_days is None and expires_at is None:
        expires_in_days = get_conf().key_default_expiry_days
    if expires_in_days is not None:
        if expires_in_days <= 0:
            raise InvalidInput("The expiry must be a positive number of days.",
                               detail={"expires": ["Must be positive."]})
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    for _attempt in range(3):
        prefix, raw = generate_key()
        try:
            with transaction.atomic():
                if ApiKey.objects.filter(name=name, revoked_at__isnull=True).exists():
                    raise Conflict(f"An unrevoked key named {name!r} already exists.",
                                   detail={"name": ["Already taken."]})
                key = ApiKey.objects.create(
                    name=name, prefix=prefix, hashed_key=hash_key(raw), scopes=scope_list,
                    all_tenants=all_tenants, expires_at=expires_at,
                    created_by=created_by if getattr(created_by, "pk", None) else None,
                )
                key.tenants.set(tenant_list)
                record(actor=actor, action="apikey.create", obj=key, tenant=None,
                       detail={"name": name, "prefix": prefix, "scopes": scope_list,
                               "all_tenants": all_tenants,
                               "tenants": sorted(t.slug for t in tenant_list),
                               "expires_at": expires_at.isoformat() if expires_at else None})
                return key, raw
        except IntegrityError:
            if ApiKey.objects.filter(name=name, revoked_at__isnull=True).exists():
                raise Conflict(f"An unrevoked key named {name!r} already exists.",
                               detail={"name": ["Already taken."]}) from None
            continue  # a prefix collision: draw again
    raise Conflict("Could not allocate a unique key prefix; retry.")


def revoke_api_key(*, actor: Actor, key: ApiKey) -> ApiKey:
    """Revoke at once: every worker looks keys up per request, so no cache holds it."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.revoked_at is not None:
            return locked
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        record(actor=actor, action="apikey.revoke", obj=locked, tenant=None,
               detail={"name": locked.name, "prefix": locked.prefix})
    key.revoked_at = locked.revoked_at
    return locked


def find_key(raw: str) -> tuple[ApiKey | None, str]:
    """The usable key matching `raw`, or (None, why not) for the 401 message."""
    if not raw.startswith(KEY_PREFIX) or len(raw) < len(KEY_PREFIX) + PREFIX_LENGTH + 2:
        return None, "Malformed API key."
    prefix = raw[len(KEY_PREFIX):len(KEY_PREFIX) + PREFIX_LENGTH]
    key = ApiKey.objects.filter(prefix=prefix).first()
    # Compare digests in constant time; an unknown prefix costs the same hash.
    digest = hash_key(raw)
    if key is None or not hmac.compare_digest(digest, key.hashed_key):
        return None, "Invalid API key."
    if key.revoked_at is not None:
        return None, "This API key has been revoked."
    if key.is_expired:
        return None, "This API key has expired."
    return key, ""


def note_key_used(key: ApiKey) -> None:
    """Keep `last_used_at` roughly current without a write on every request."""
    now = timezone.now()
    resolution = timedelta(seconds=get_conf().last_used_resolution_s)
    if key.last_used_at is None or now - key.last_used_at >= resolution:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
