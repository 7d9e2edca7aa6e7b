"""API keys in the admin: create (the secret is shown once), list, revoke. Never edited.

Creating and revoking go through `chistone_site.api.keys`, like the command and the tests.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from chistone_site.api import keys
from chistone_site.api.models import SCOPES, ApiKey
from tenants.audit import Actor
from tenants.errors import ServiceError
from tenants.models import Tenant


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Audit rows name the key: apikey:NAME.")
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES], widget=forms.CheckboxSelectMultiple, initial=["read"],
        help_text="read: GET, validate, simulate, dry runs. write: tenants, backends, publish, "
                  "apply. activate: activate versions (and roll back).")
    all_tenants = forms.BooleanField(required=False, help_text="Reach every tenant.")
    tenants = forms.ModelMultipleChoiceField(
        queryset=Tenant.objects.order_by("slug"), required=False,
        widget=forms.CheckboxSelectMultiple, help_text="Or only these tenants.")
    expires_in_days = forms.IntegerField(min_value=1, required=False,
                                         help_text="Empty: the key does not expire.")


@admin.action(description="Revoke the selected keys")
def revoke_keys(modeladmin, request, queryset):
    """Revoking cannot be undone: the first call shows what would be revoked and asks; the
    confirmation (post=yes, as Django's own delete action does) revokes."""
    live = queryset.filter(revoked_at__isnull=True)
    if request.POST.get("post") != "yes":
        context = {**modeladmin.admin_site.each_context(request), "opts": modeladmin.opts,
                   "title": "Revoke API keys?", "keys": list(queryset.order_by("name")),
                   "live": live.count(),
                   "selected": [str(pk) for pk in queryset.values_list("pk", flat=True)],
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
        return TemplateResponse(request, "admin/api/apikey/revoke_confirmation.html", context)
    actor = Actor.for_user(request.user)
    count = 0
    for key in live:
        keys.revoke_api_key(actor=actor, key=key)
        count += 1
    messages.success(request, f"Revoked {count} key(s). Clients using them now get 401.")
    return None


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope_list", "reach", "expires_at", "revoked_at",
                    "last_used_at", "created_at")
    list_filter = ("all_tenants",)
    search_fields = ("name", "prefix")
    actions = [revoke_keys]
    readonly_fields = ("name", "prefix", "scopes", "all_tenants", "tenants", "expires_at",
                       "revoked_at", "created_at", "last_used_at", "created_by")
    fields = readonly_fields

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="tenants")
    def reach(self, obj: ApiKey) -> str:
        if obj.all_tenants:
            return "all"
        return ", ".join(obj.tenants.order_by("slug").values_list("slug", flat=True))

    def has_change_permission(self, request, obj=None) -> bool:
        # Viewing only: a key is never edited in place, it is revoked and replaced.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoked keys stay for the audit trail

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyCreateForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": "Add API key", "form": form, "add": True}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                key, secret = keys.create_api_key(
                    actor=Actor.for_user(request.user), name=data["name"],
                    scopes=data["scopes"], tenants=data["tenants"],
                    all_tenants=data["all_tenants"], expires_in_days=data["expires_in_days"],
                    created_by=request.user)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                context.update(title="API key created", key=key, secret=secret)
                response = TemplateResponse(request, "admin/api/apikey/created.html", context)
                response["Cache-Control"] = "no-store"
                return response
        return TemplateResponse(request, "admin/api/apikey/add.html", context)
