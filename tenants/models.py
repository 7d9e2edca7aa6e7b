"""Tenants, their backends, the host claims that keep routing unambiguous, and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from tenants import backend_defaults, validators


class Tenant(models.Model):
    """A team whose traffic the gateway routes, identified by domains and/or a path prefix."""

    slug = models.SlugField(max_length=63, unique=True, validators=[validators.validate_slug])
    name = models.CharField(max_length=200)
    # Kept sorted and lower-case by the services; HostClaim mirrors it for uniqueness.
    domains = models.JSONField(default=list, blank=True)
    path_prefix = models.CharField(max_length=200, blank=True, default="")
    active = models.BooleanField(default=True)
    # A lazy reference: luascripts depends on tenants, never the reverse in Python imports.
    active_version = models.ForeignKey(
        "luascripts.ScriptVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # The tenant's own body limits for scripts (req.body(), res.body(), http.request);
    # null = the gateway's default (luascripts.engine.Limits).
    max_request_body_bytes = models.PositiveIntegerField(null=True, blank=True)
    max_response_body_bytes = models.PositiveIntegerField(null=True, blank=True)
    # Bumped by every service that changes this tenant; the API uses it for If-Match.
    config_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def script_limits(self) -> dict[str, int]:
        """The script limits this tenant sets itself (Limits field name -> value)."""
        return {name: value for name in LIMIT_FIELDS
                if (value := getattr(self, name)) is not None}


# Tenant fields that override luascripts.engine.Limits fields of the same name.
LIMIT_FIELDS = ("max_request_body_bytes", "max_response_body_bytes")


class HostClaim(models.Model):
    """One (host, prefix) pair a tenant answers for; `host=""` means any host.

    Derived from Tenant.domains/path_prefix by the services, in the same transaction, so the
    database itself refuses two tenants claiming the same host and prefix.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="claims")
    host = models.CharField(max_length=253, blank=True)
    path_prefix = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "path_prefix"],
                                    name="unique_host_prefix_claim"),
        ]

    def __str__(self) -> str:
        return f"{self.host or '*'}{self.path_prefix or '/'}"


class Backend(models.Model):
    """An upstream service registered for a tenant; scripts refer to it by name only."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="backends")
    name = models.CharField(max_length=64, validators=[validators.validate_backend_name])
    url = models.CharField(max_length=500)
    weight = models.PositiveIntegerField(default=backend_defaults.WEIGHT)
    enabled = models.BooleanField(default=True)
    health_check_path = models.CharField(max_length=200, blank=True, default="")
    connect_timeout_ms = models.PositiveIntegerField(default=backend_defaults.CONNECT_TIMEOUT_MS,
                                                     validators=[MinValueValidator(1)])
    read_timeout_ms = models.PositiveIntegerField(default=backend_defaults.READ_TIMEOUT_MS,
                                                  validators=[MinValueValidator(1)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"],
                                    name="unique_backend_name_per_tenant"),
            models.CheckConstraint(
                condition=models.Q(connect_timeout_ms__gte=1) & models.Q(read_timeout_ms__gte=1),
                name="backend_timeouts_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class ConfigState(models.Model):
    """The single row holding the cluster-wide configuration generation.

    Every committed change increments it inside its own transaction, so a gateway node that
    reads a generation knows it has seen every change up to that number.
    """

    generation = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"generation {self.generation}"


class AuditEvent(models.Model):
    """Who did what to which object, written in the same transaction as the change."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    # Kept as text so the trail survives the tenant's deletion.
    tenant_slug = models.CharField(max_length=63, blank=True, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_repr}"


class OperatorAccess(models.Model):
    """The tenants a staff account (not a superuser) may see and change in the admin.

    Superusers see every tenant; any other staff account sees only the tenants listed here, and
    none at all without a row (fail closed). Changed through tenants.access, which audits it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="operator_access"
    )
    tenants = models.ManyToManyField(Tenant, blank=True, related_name="operators")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "operator access"
        verbose_name_plural = "operator access"

    def __str__(self) -> str:
        return f"access of {self.user}"
