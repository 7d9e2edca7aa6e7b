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
        permissions = [
            # Activating a version whose stored tests fail: a separate, audited choice.
            ("override_script_tests", "Can activate a version whose stored tests fail"),
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


class Rollout(models.Model):
    """A version given part of a tenant's traffic (or all of it, under a guard) and how that
    ended. The tenant's `active_version` stays the previous one until the rollout completes;
    a running rollout is read into the data plane's snapshot with its candidate script.

    At most one rollout of a tenant runs at a time (a partial unique constraint).
    """

    RUNNING = "running"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    AUTO_ROLLED_BACK = "auto_rolled_back"
    STATES = [(RUNNING, "running"), (COMPLETED, "completed"), (ROLLED_BACK, "rolled back"),
              (AUTO_ROLLED_BACK, "rolled back by its guard")]

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="rollouts")
    version = models.ForeignKey(ScriptVersion, on_delete=models.CASCADE, related_name="+")
    # The version active when the rollout started: what the rest of the traffic gets, and
    # what a rollback keeps (or, for a guarded full activation, goes back to).
    previous = models.ForeignKey(ScriptVersion, null=True, blank=True,
                                 on_delete=models.CASCADE, related_name="+")
    percent = models.PositiveSmallIntegerField()
    # The request header whose value keeps a client on one version; "" = the client's IP.
    key_header = models.CharField(max_length=100, blank=True, default="")
    # The guard: all three set, or none.
    max_error_rate = models.FloatField(null=True, blank=True)
    min_requests = models.PositiveIntegerField(null=True, blank=True)
    window_s = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=STATES, default=RUNNING)
    started_by = models.CharField(max_length=200)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=200, blank=True, default="")
    # Why it ended, for people: the guard's figures on an automatic rollback.
    outcome = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["tenant", "-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant"], condition=models.Q(state="running"),
                                    name="one_running_rollout_per_tenant"),
            models.CheckConstraint(condition=models.Q(percent__gte=1, percent__lte=100),
                                   name="rollout_percent_1_to_100"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug} v{self.version.number} at {self.percent}%"

    @property
    def guarded(self) -> bool:
        return self.max_error_rate is not None

    @property
    def running(self) -> bool:
        return self.state == self.RUNNING


class GuardCount(models.Model):
    """Requests and errors one gateway worker saw for one side of a guarded rollout in one
    second. Every worker of every node inserts its own rows (about once a second, only while
    it serves a guarded tenant), so the guard reads the whole cluster's figures with one
    aggregate over its window and no row is ever contended."""

    OLD, NEW = 1, 2

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="counts")
    arm = models.PositiveSmallIntegerField()  # OLD: the previous version, NEW: the candidate
    second = models.BigIntegerField(db_index=True)  # Unix time of the worker's flush
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)  # 5xx answers, script errors included

    def __str__(self) -> str:
        return f"rollout {self.rollout_id} arm {self.arm} @{self.second}"


class Shadow(models.Model):
    """A stored version that decides, without effects, for a sample of a tenant's live
    requests; its decisions are compared with the active version's. At most one runs per
    tenant."""

    RUNNING = "running"
    STOPPED = "stopped"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="shadows")
    version = models.ForeignKey(ScriptVersion, on_delete=models.CASCADE, related_name="+")
    sample_rate = models.FloatField()  # the share of requests shadowed, 0 < rate <= 1
    state = models.CharField(max_length=20, default=RUNNING,
                             choices=[(RUNNING, "running"), (STOPPED, "stopped")])
    started_by = models.CharField(max_length=200)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Sampled requests a worker could not shadow (its queue was full or its budget spent).
    dropped = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["tenant", "-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant"], condition=models.Q(state="running"),
                                    name="one_running_shadow_per_tenant"),
            models.CheckConstraint(condition=models.Q(sample_rate__gt=0, sample_rate__lte=1),
                                   name="shadow_rate_0_to_1"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug} shadow v{self.version.number}"


class ShadowRoute(models.Model):
    """Per route of the active version: requests compared and how many decided differently."""

    shadow = models.ForeignKey(Shadow, on_delete=models.CASCADE, related_name="routes")
    route = models.CharField(max_length=300)  # the active version's route pattern, "-": none
    compared = models.PositiveBigIntegerField(default=0)
    mismatched = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["shadow", "-mismatched", "route"]
        constraints = [
            models.UniqueConstraint(fields=["shadow", "route"], name="unique_shadow_route"),
        ]

    def __str__(self) -> str:
        return f"{self.route}: {self.mismatched}/{self.compared}"


class ShadowSample(models.Model):
    """One mismatch kept for people to read: the request and both decisions (bounded)."""

    shadow = models.ForeignKey(Shadow, on_delete=models.CASCADE, related_name="samples")
    request_id = models.CharField(max_length=100)
    route = models.CharField(max_length=300)
    method = models.CharField(max_length=20, blank=True, default="")
    path = models.CharField(max_length=300, blank=True, default="")
    active = models.JSONField(default=dict)  # the active version's decision
    candidate = models.JSONField(default=dict)  # the shadow version's decision
    seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["shadow", "id"]

    def __str__(self) -> str:
        return f"{self.request_id} on {self.route}"
