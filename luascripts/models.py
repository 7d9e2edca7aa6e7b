"""Immutable, numbered versions of a tenant's Lua route script."""

from __future__ import annotations

from django.db import models


class ImmutableVersionError(Exception):
    """Raised when code tries to change a stored script version."""


class ScriptVersionQuerySet(models.QuerySet):
    def update(self, **kwargs):  # type: ignore[override]
        raise ImmutableVersionError(
            "Script versions are immutable: publish a new version instead of updating one."
        )


class ScriptVersion(models.Model):
    """One published source of a tenant's script. A change is always a new version."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    source = models.TextField()
    sha256 = models.CharField(max_length=64, db_index=True)
    message = models.CharField(max_length=500, blank=True, default="")
    author = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # The validation result at publish time: an invalid version is a draft, never activated.
    valid = models.BooleanField(default=False)
    errors = models.JSONField(default=list, blank=True)
    # Things wrong with a valid version (a handler that never runs), found at publish.
    warnings = models.JSONField(default=list, blank=True)
    routes = models.JSONField(default=list, blank=True)
    tests = models.JSONField(default=list, blank=True)

    objects = ScriptVersionQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="unique_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug} v{self.number}"

    def save(self, *args, **kwargs):
        # Integrity guard, not business logic: a stored version is never rewritten.
        if self.pk is not None and not self._state.adding:
            raise ImmutableVersionError(
                f"Script version v{self.number} is immutable: publish a new version instead."
            )
        super().save(*args, **kwargs)

    @property
    def status(self) -> str:
        if not self.valid:
            return "draft"
        return "active" if self.tenant.active_version_id == self.pk else "valid"


class ScriptFault(models.Model):
    """A version the worker watchdog caught blocking a worker; the data plane stops running it.

    Kept apart from ScriptVersion because versions are immutable; a fault is a later fact.
    """

    version = models.OneToOneField(ScriptVersion, on_delete=models.CASCADE, related_name="fault")
    detected_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=500)

    def __str__(self) -> str:
        return f"fault in {self.version}"
