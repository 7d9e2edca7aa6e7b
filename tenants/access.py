"""Write services for operators' tenant access (who may see which tenants in the admin).

Keyword-only, one transaction each, an audit row inside it, like tenants.services.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from tenants.audit import Actor, record
from tenants.errors import InvalidInput
from tenants.models import OperatorAccess, Tenant


def set_operator_tenants(*, actor: Actor, user, tenants: Iterable[Tenant]) -> OperatorAccess:
    """Make `tenants` exactly the tenants `user` may see in the admin."""
    if user.is_superuser:
        raise InvalidInput(
            f"{user.get_username()!r} is a superuser and sees every tenant; "
            "tenant access only limits other staff accounts.",
            detail={"user": ["Superusers are not limited by tenant access."]},
        )
    wanted = {tenant.pk: tenant for tenant in tenants}
    with transaction.atomic():
        access, _ = OperatorAccess.objects.select_for_update().get_or_create(user=user)
        before = set(access.tenants.values_list("pk", flat=True))
        added = [wanted[pk] for pk in sorted(set(wanted) - before)]
        removed = list(Tenant.objects.filter(pk__in=before - set(wanted)).order_by("slug"))
        if added or removed:
            access.tenants.set(list(wanted.values()))
            access.save(update_fields=["updated_at"])
            record(actor=actor, action="access.update", obj=access, tenant=None,
                   detail={"user": user.get_username(),
                           "added": [t.slug for t in added],
                           "removed": [t.slug for t in removed]})
    return access


def grant_tenant(*, actor: Actor, user, tenant: Tenant) -> None:
    """Add one tenant to a (non-superuser) operator's access, e.g. one they just created."""
    if user.is_superuser:
        return
    with transaction.atomic():
        access, _ = OperatorAccess.objects.select_for_update().get_or_create(user=user)
        if access.tenants.filter(pk=tenant.pk).exists():
            return
        access.tenants.add(tenant)
        access.save(update_fields=["updated_at"])
        record(actor=actor, action="access.grant", obj=access, tenant=tenant,
               detail={"user": user.get_username(), "added": [tenant.slug]})


def remove_operator(*, actor: Actor, user) -> None:
    """Drop a staff account's tenant access entirely (the account is being deleted)."""
    with transaction.atomic():
        access = OperatorAccess.objects.select_for_update().filter(user=user).first()
        if access is None:
            return
        removed = list(access.tenants.order_by("slug").values_list("slug", flat=True))
        record(actor=actor, action="access.remove", obj=access, tenant=None,
               detail={"user": user.get_username(), "removed": removed})
        access.delete()
