"""API keys for CI: random, stored as a SHA-256 digest, scoped to tenants and to actions.

A key reads `chs_<prefix>_<secret>`. The prefix (8 characters) is stored in clear so a key can
be found and recognised in lists; the whole key is stored only as its SHA-256 hex digest. A fast
hash is right here: the secret is 256 random bits, not a password that could be guessed.
Keys are created and revoked by the services in `chistone_site.api.keys`, never edited.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

SCOPE_READ = "read"
SCOPE_WRITE = "write"
SCOPE_ACTIVATE = "activate"
# Activating a version whose stored tests fail: never implied by `activate`.
SCOPE_OVERRIDE = "override"
SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_ACTIVATE, SCOPE_OVERRIDE)


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    all_tenants = models.BooleanField(default=False)
    tenants = models.ManyToManyField("tenants.Tenant", blank=True, related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name", "-created_at"]
        verbose_name = "API key"
        constraints = [
            # Audit rows name the key, so two usable keys may not share a name.
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(revoked_at__isnull=True),
                name="unique_unrevoked_api_key_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and not self.is_expired
