"""Actors and audit rows. Every service writes its row inside its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models

from tenants.models import AuditEvent, Tenant


@dataclass(frozen=True)
class Actor:
    """Who is making a change: a user, an API key, or a system task."""

    name: str
    user: Any = None  # a django.contrib.auth user, when a person acts

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(name=user.get_username(), user=user)

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(name=name)


def record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model,
    tenant: Tenant | None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor.name[:200],
        user=actor.user if getattr(actor.user, "pk", None) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_repr=str(obj)[:300],
        tenant=tenant if tenant is not None and tenant.pk else None,
        tenant_slug=tenant.slug if tenant is not None else "",
        detail=detail or {},
    )
