"""The gateway-aware parts of the admin, layered on top of the tenants and scripts admins.

tenants and luascripts cannot import the data plane (the layers contract), so their admins
leave two hooks open and this module, at the top layer, fills them: the tenant page gets live
backend health, the script page's console gets the real dry run (chistone_site.simulation).
The dashboard on the admin index is the `gateway_dashboard` tag (templatetags/chistone_admin).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin

from chistone_site.admin_gateway import gateway_report
from chistone_site.simulation import simulate
from luascripts.admin import ScriptVersionAdmin
from luascripts.models import ScriptVersion
from tenants.admin import TenantAdmin
from tenants.errors import ServiceError
from tenants.models import Tenant


class GatewayTenantAdmin(TenantAdmin):
    def tenant_overview(self, request, tenant: Tenant) -> dict:
        context = super().tenant_overview(request, tenant)
        report = gateway_report([tenant.slug])
        context["gateway_running"] = report is not None
        context["backend_health"] = report.tenants[tenant.slug] if report is not None else None
        return context


class GatewayScriptVersionAdmin(ScriptVersionAdmin):
    def simulate_request(self, *, tenant: Tenant, version: ScriptVersion,
                         request_data: dict[str, Any]) -> dict[str, Any]:
        try:
            result = simulate(tenant=tenant, request=request_data, version=version).to_dict()
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


for model, model_admin in ((Tenant, GatewayTenantAdmin),
                           (ScriptVersion, GatewayScriptVersionAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
