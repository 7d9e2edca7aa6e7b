"""The gateway-aware parts of the admin, layered on top of the tenants and scripts admins.

tenants and luascripts cannot import the data plane (the layers contract), so their admins
leave hooks open and this module, at the top layer, fills them: the tenant page and the
backends list get live backend health, the script page's console gets the real dry run
(chistone_site.simulation). The dashboard on the admin index is the `gateway_dashboard` tag
(templatetags/chistone_admin); the console's own pages are chistone_site.admin_console.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse

from chistone_site.admin_gateway import gateway_report
from chistone_site.simulation import simulate
from luascripts.admin import ScriptVersionAdmin
from luascripts.models import ScriptVersion
from tenants.admin import BackendAdmin, TenantAdmin
from tenants.admin_scoping import visible_tenants
from tenants.errors import ServiceError
from tenants.models import Backend, Tenant


class GatewayTenantAdmin(TenantAdmin):
    def tenant_overview(self, request, tenant: Tenant) -> dict:
        context = super().tenant_overview(request, tenant)
        report = gateway_report([tenant.slug])
        context["gateway_running"] = report is not None
        context["backend_report"] = report
        context["backend_health"] = report.tenants[tenant.slug] if report is not None else None
        context["traffic_url"] = reverse("admin:tenant_traffic", args=[tenant.pk])
        return context


class GatewayBackendAdmin(BackendAdmin):
    def get_list_display(self, request):
        """The list plus a health column, read once per page from the running gateway."""
        report = gateway_report(visible_tenants(request.user).values_list("slug", flat=True))

        @admin.display(description="health")
        def health(obj: Backend) -> str:
            if report is None:
                return "unknown"
            views = {b["name"]: b for b in report.tenants[obj.tenant.slug].backends}
            view = views.get(obj.name)
            if view is None:
                return "not loaded yet"
            return render_to_string("admin/chistone/_health.html", {"b": view})

        return [*super().get_list_display(request), health]


class GatewayScriptVersionAdmin(ScriptVersionAdmin):
    def simulate_request(self, *, tenant: Tenant, version: ScriptVersion | None,
                         request_data: dict[str, Any], source: str | None = None
                         ) -> dict[str, Any]:
        try:
            if version is None:
                result = simulate(tenant=tenant, request=request_data, source=source).to_dict()
            else:
                result = simulate(tenant=tenant, request=request_data,
                                  version=version).to_dict()
        except ServiceError as exc:
            return {"error": exc.message}
        action = result.get("action")
        if action:  # headers as (name, value) pairs in the order they would be sent
            for key in ("upstream_headers", "headers"):
                value = action.get(key) or []
                action[key] = [tuple(pair) for pair in
                               (value.items() if isinstance(value, Mapping) else value)]
        result["logs"] = [line if isinstance(line, Mapping)
                          else {"level": line[0], "message": line[1]}
                          for line in result.get("logs") or []]
        return result


for model, model_admin in ((Tenant, GatewayTenantAdmin), (Backend, GatewayBackendAdmin),
                           (ScriptVersion, GatewayScriptVersionAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
