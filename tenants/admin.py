"""The operators' admin for tenants, backends, tenant access and the audit log.

Every write goes through tenants.services (or tenants.access) inside the admin's transaction;
a refused write comes back as a form error (tenants.admin_forms). Every queryset, choice and
filter is scoped by tenants.admin_scoping. Pieces that need the script engine or the data plane
(backend health, the dashboard) are added on top by chistone_site.admin.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import NestedObjects
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db import router
from django.db.models import Count
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from tenants import access, services
from tenants.admin_forms import (
    BackendForm,
    ServiceRefused,
    ServiceWriteAdminMixin,
    ServiceWriteInlineMixin,
    TenantForm,
)
from tenants.admin_scoping import (
    ScopedRelatedFieldListFilter,
    TenantScopedAdminMixin,
    sees_all_tenants,
    visible_tenants,
)
from tenants.audit import Actor
from tenants.errors import ServiceError
from tenants.models import AuditEvent, Backend, ConfigState, HostClaim, OperatorAccess, Tenant

BACKEND_FIELDS = list(services.BACKEND_FIELDS)
TENANT_FIELDS = ["slug", "name", "active", "domains", "path_prefix", "max_request_body_bytes",
                 "max_response_body_bytes"]


def script_page_url(tenant: Tenant) -> str | None:
    """The script page of `tenant` (luascripts' admin), if that admin is installed."""
    try:
        return reverse("admin:luascripts_scriptversion_script", args=[tenant.pk])
    except NoReverseMatch:
        return None


class BackendInline(ServiceWriteInlineMixin, TenantScopedAdminMixin, admin.TabularInline):
    model = Backend
    form = BackendForm
    fields = BACKEND_FIELDS
    extra = 1
    tenant_path = "tenant"


class HasActiveScriptFilter(admin.SimpleListFilter):
    title = "active script"
    parameter_name = "script"

    def lookups(self, request, model_admin):
        return [("yes", "has an active script"), ("no", "no active script")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(active_version__isnull=False)
        if self.value() == "no":
            return queryset.filter(active_version__isnull=True)
        return queryset


@admin.register(Tenant)
class TenantAdmin(ServiceWriteAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    form = TenantForm
    tenant_path = ""
    inlines = [BackendInline]
    list_display = ("slug", "name", "where", "active", "script", "backend_count", "updated_at")
    list_filter = ("active", HasActiveScriptFilter)
    search_fields = ("slug", "name", "path_prefix", "claims__host")
    # Explicit: the backend count below groups rows, and Django drops Meta.ordering from
    # grouped queries (autocomplete would then paginate an unordered list).
    ordering = ("slug",)
    readonly_fields = ("script", "config_version")
    change_form_template = "admin/tenants/tenant/change_form.html"
    fieldsets = [
        (None, {"fields": ["slug", "name", "active"]}),
        ("Routing", {"fields": ["domains", "path_prefix"]}),
        ("Script limits", {"fields": ["max_request_body_bytes", "max_response_body_bytes"],
                           "classes": ["collapse"]}),
        ("Route script", {"fields": ["script", "config_version"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("active_version").annotate(
            _backends=Count("backends", distinct=True))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        form_class.sees_all_tenants = sees_all_tenants(request.user)
        return form_class

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing to show about a script before the tenant exists
            return [fs for fs in self.fieldsets if fs[0] != "Route script"]
        return self.fieldsets

    @admin.display(description="domains / prefix")
    def where(self, obj: Tenant) -> str:
        hosts = ", ".join(obj.domains) if obj.domains else "any host"
        return f"{hosts} {obj.path_prefix}".strip() if obj.path_prefix else hosts

    @admin.display(description="backends", ordering="_backends")
    def backend_count(self, obj: Tenant) -> int:
        return getattr(obj, "_backends", None) or obj.backends.count()

    @admin.display(description="script")
    def script(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        url = script_page_url(obj)
        label = f"v{obj.active_version.number} active" if obj.active_version_id else "no script"
        if url is None:
            return label
        return format_html('<a href="{}">{}</a> &middot; <a href="{}">edit script</a>',
                           url, label, url)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        tenant = self.get_object(request, object_id)
        extra_context.update(self.tenant_overview(request, tenant))
        return super().change_view(request, object_id, form_url, extra_context)

    def tenant_overview(self, request, tenant: Tenant) -> dict:
        """Context for the read-only sections of the tenant page (route table, backends)."""
        version = tenant.active_version
        return {
            "active_version": version,
            "route_table": list(version.routes) if version is not None else [],
            "script_url": script_page_url(tenant),
            "backend_health": None,  # filled in by the gateway-aware subclass
        }

    def history_view(self, request, object_id, extra_context=None):
        """The tenant's history from our audit log (written by the services for the admin,
        the API and the CLI alike, script activations included), not Django's LogEntry."""
        tenant = self.get_object(request, object_id)
        if tenant is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, tenant):
            raise PermissionDenied
        events = list(AuditEvent.objects.filter(tenant=tenant).select_related("user")[:500])
        rows = [{"event": e, "summary": audit_summary(e), "links": audit_links(e)}
                for e in events]
        context = {
            **self.admin_site.each_context(request), "title": f"History of {tenant.slug}",
            "subtitle": None, "opts": self.opts, "object": tenant, "rows": rows,
            "audit_url": reverse("admin:tenants_auditevent_changelist")
            + f"?tenant={tenant.slug}",
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tenants/tenant/object_history.html", context)

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        values = {field: form.cleaned_data[field] for field in TENANT_FIELDS
                  if field in form.cleaned_data}
        try:
            if change:
                saved = services.update_tenant(actor=actor, tenant=obj, **values)
            else:
                saved = services.create_tenant(actor=actor, **values)
                # A limited operator keeps seeing the tenant they just created.
                access.grant_tenant(actor=actor, user=request.user, tenant=saved)
        except ServiceError as exc:
            raise ServiceRefused(exc) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def save_formset(self, request, form, formset, change):
        if formset.model is not Backend:
            return super().save_formset(request, form, formset, change)
        actor = Actor.for_user(request.user)
        tenant = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for index, row in enumerate(formset.forms):
            instance = row.instance
            try:
                if formset.can_delete and formset._should_delete_form(row):
                    if instance.pk is not None:
                        services.delete_backend(actor=actor, backend=instance)
                        formset.deleted_objects.append(instance)
                elif instance.pk is None:
                    if row.has_changed():
                        values = {f: row.cleaned_data[f] for f in BACKEND_FIELDS}
                        formset.new_objects.append(services.create_backend(
                            actor=actor, tenant=tenant, **values))
                elif row.has_changed():
                    changes = {f: row.cleaned_data[f] for f in row.changed_data
                               if f in BACKEND_FIELDS}
                    formset.changed_objects.append((services.update_backend(
                        actor=actor, backend=instance, **changes), row.changed_data))
            except ServiceError as exc:
                raise ServiceRefused(exc, formset_prefix=formset.prefix, index=index) from exc

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # A tenant "protects" its own active version from the cascade; delete_tenant unhooks
        # it first, so that is no reason to refuse. Anything else protected still is.
        collector = NestedObjects(using=router.db_for_write(Tenant))
        collector.collect(list(objs))
        own = {obj.pk for obj in objs}
        if all(isinstance(p, Tenant) and p.pk in own for p in collector.protected):
            protected = []
        # Host claims and script versions are read-only in the admin but belong to the tenant:
        # they go with it (delete_tenant audits that), without a delete permission of their own.
        versions = Tenant._meta.get_field("versions").related_model
        owned = {str(HostClaim._meta.verbose_name), str(versions._meta.verbose_name),
                 str(versions._meta.get_field("fault").related_model._meta.verbose_name)}
        perms_needed = {name for name in perms_needed if str(name) not in owned}
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request, obj):
        services.delete_tenant(actor=Actor.for_user(request.user), tenant=obj)

    def delete_queryset(self, request, queryset):
        actor = Actor.for_user(request.user)
        for tenant in queryset:
            services.delete_tenant(actor=actor, tenant=tenant)


@admin.register(Backend)
class BackendAdmin(ServiceWriteAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "tenant", "url", "weight", "enabled", "health_check_path")
    list_filter = ("enabled", ("tenant", ScopedRelatedFieldListFilter))
    search_fields = ("name", "url", "tenant__slug")
    list_select_related = ("tenant",)
    form = BackendForm
    fields = ["tenant", *BACKEND_FIELDS]

    def get_readonly_fields(self, request, obj=None):
        # A backend belongs to its tenant for life: scripts name it within that tenant.
        return ("tenant",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        try:
            if change:
                changes = {f: form.cleaned_data[f] for f in form.changed_data
                           if f in BACKEND_FIELDS}
                saved = services.update_backend(actor=actor, backend=obj, **changes)
            else:
                values = {f: form.cleaned_data[f] for f in BACKEND_FIELDS}
                saved = services.create_backend(actor=actor, tenant=form.cleaned_data["tenant"],
                                                **values)
        except ServiceError as exc:
            raise ServiceRefused(exc) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def delete_model(self, request, obj):
        services.delete_backend(actor=Actor.for_user(request.user), backend=obj)

    def delete_queryset(self, request, queryset):
        actor = Actor.for_user(request.user)
        for backend in queryset.select_related("tenant"):
            services.delete_backend(actor=actor, backend=backend)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(HostClaim)
class HostClaimAdmin(TenantScopedAdminMixin, ReadOnlyAdmin):
    list_display = ("host", "path_prefix", "tenant")
    list_filter = (("tenant", ScopedRelatedFieldListFilter),)
    search_fields = ("host", "path_prefix", "tenant__slug")


@admin.register(ConfigState)
class ConfigStateAdmin(ReadOnlyAdmin):
    list_display = ("generation", "updated")

    @admin.display(description="updated at", ordering="updated_at")
    def updated(self, obj: ConfigState) -> str:
        # To the second: generations can follow each other within a minute.
        return obj.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC")

    def has_view_permission(self, request, obj=None):
        return sees_all_tenants(request.user)


class AuditTenantFilter(admin.SimpleListFilter):
    """By tenant slug, so the trail of a deleted tenant stays reachable (for superusers)."""

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        slugs = (model_admin.get_queryset(request).exclude(tenant_slug="")
                 .order_by("tenant_slug").values_list("tenant_slug", flat=True).distinct())
        return [(slug, slug) for slug in slugs]

    def queryset(self, request, queryset):
        return queryset.filter(tenant_slug=self.value()) if self.value() else queryset


class AuditActorFilter(admin.SimpleListFilter):
    """By who acted: a user name, an API key's name, or a system task."""

    title = "user"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        actors = (model_admin.get_queryset(request).order_by("actor")
                  .values_list("actor", flat=True).distinct())
        return [(actor, actor) for actor in actors]

    def queryset(self, request, queryset):
        return queryset.filter(actor=self.value()) if self.value() else queryset


SCRIPT_ACTIONS = ("script.publish", "script.activate", "script.rollback", "script.fault",
                  "script.deactivate")


def audit_links(event: AuditEvent) -> str:
    """Links from a script event to the version it names and to its diff: against the
    version it replaced (activate, roll back, remove) or the one before it (publish)."""
    if event.action not in SCRIPT_ACTIONS or event.tenant_id is None:
        return ""
    detail = event.detail or {}
    number, previous = detail.get("version"), detail.get("previous")
    if event.action == "script.publish" and isinstance(number, int) and number > 1:
        previous = number - 1
    try:
        parts = []
        if isinstance(number, int):
            url = reverse("admin:luascripts_scriptversion_version",
                          args=[event.tenant_id, number])
            parts.append(format_html('<a href="{}" class="audit-version">v{}</a>', url, number))
        if isinstance(previous, int) and isinstance(number, int) and previous != number:
            url = reverse("admin:luascripts_scriptversion_diff", args=[event.tenant_id])
            parts.append(format_html('<a href="{}?a={}&amp;b={}" class="audit-diff">diff '
                                     'v{} &rarr; v{}</a>', url, previous, number, previous,
                                     number))
        elif isinstance(previous, int):
            url = reverse("admin:luascripts_scriptversion_version",
                          args=[event.tenant_id, previous])
            parts.append(format_html('<a href="{}">previous v{}</a>', url, previous))
    except NoReverseMatch:
        return ""
    return format_html_join(" &middot; ", "{}", ((p,) for p in parts))


def audit_summary(event: AuditEvent) -> str:
    """What changed, in a line: the fields of an update, the version of a script event."""
    detail = event.detail or {}
    if "changes" in detail and isinstance(detail["changes"], dict):
        return ", ".join(f"{field}: {before!r} → {after!r}"
                         for field, (before, after) in detail["changes"].items())
    if event.action.startswith("script.") and "version" in detail:
        text = f"v{detail['version']}"
        if detail.get("previous"):
            text = f"v{detail['previous']} → {text}"
        if detail.get("message"):
            text += f": {detail['message']}"
        if detail.get("valid") is False:
            text += " (draft)"
        return text
    if event.action.startswith("access."):
        return (f"{detail.get('user', '')}: +{', '.join(detail.get('added', [])) or '-'} "
                f"−{', '.join(detail.get('removed', [])) or '-'}")
    return ""


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdminMixin, ReadOnlyAdmin):
    """The audit trail written by the services: read-only, scoped like everything else.

    Operators see their tenants' rows; rows about no tenant (access changes) or about a deleted
    tenant are for superusers.
    """

    list_display = ("created_at", "actor", "action", "object_repr", "tenant_slug", "what",
                    "links")
    list_filter = (AuditTenantFilter, AuditActorFilter, "action")
    search_fields = ("actor", "object_repr", "tenant_slug", "action")
    date_hierarchy = "created_at"
    fields = ("created_at", "actor", "user", "action", "object_type", "object_repr",
              "tenant_slug", "pretty_detail")
    readonly_fields = fields

    @admin.display(description="what")
    def what(self, obj: AuditEvent) -> str:
        return audit_summary(obj)

    @admin.display(description="version")
    def links(self, obj: AuditEvent) -> str:
        return audit_links(obj)

    @admin.display(description="detail")
    def pretty_detail(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.detail, indent=2, sort_keys=True,
                                                       default=str))


@admin.register(OperatorAccess)
class OperatorAccessAdmin(ServiceWriteAdminMixin, admin.ModelAdmin):
    """Which tenants a staff account may see; superusers only."""

    list_display = ("user", "tenant_list", "updated_at")
    search_fields = ("user__username", "tenants__slug")
    list_filter = (("tenants", ScopedRelatedFieldListFilter),)
    filter_horizontal = ()

    def has_module_permission(self, request):
        return sees_all_tenants(request.user)

    def has_view_permission(self, request, obj=None):
        return sees_all_tenants(request.user)

    def has_add_permission(self, request):
        return sees_all_tenants(request.user)

    def has_change_permission(self, request, obj=None):
        return sees_all_tenants(request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # an empty list of tenants is how access is taken away

    def get_readonly_fields(self, request, obj=None):
        return ("user",) if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = db_field.related_model.objects.filter(
                is_staff=True, is_superuser=False, operator_access__isnull=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "tenants":
            kwargs["widget"] = forms.CheckboxSelectMultiple
            kwargs["queryset"] = visible_tenants(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="tenants")
    def tenant_list(self, obj: OperatorAccess) -> str:
        return ", ".join(t.slug for t in obj.tenants.all()) or "(none)"

    def save_model(self, request, obj, form, change):
        user = obj.user if change else form.cleaned_data["user"]
        try:
            saved = access.set_operator_tenants(actor=Actor.for_user(request.user), user=user,
                                                tenants=form.cleaned_data["tenants"])
        except ServiceError as exc:
            raise ServiceRefused(exc) from exc
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # set_operator_tenants wrote the many-to-many rows (and the audit row)


class OperatorUserAdmin(UserAdmin):
    """Django's user admin, able to delete a staff account that had operator access: the
    access row goes with the account (through tenants.access, audited), so it needs no
    delete permission of its own (operator access is never deleted by hand)."""

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs,
                                                                                    request)
        own = str(OperatorAccess._meta.verbose_name)
        return deleted, model_count, {p for p in perms_needed if str(p) != own}, protected

    def delete_model(self, request, obj):
        access.remove_operator(actor=Actor.for_user(request.user), user=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        actor = Actor.for_user(request.user)
        for user in queryset:
            access.remove_operator(actor=actor, user=user)
        super().delete_queryset(request, queryset)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, OperatorUserAdmin)
