"""The gateway-aware parts of the admin, layered on top of the tenants and scripts admins.

tenants and luascripts cannot import the data plane (the layers contract), so their admins
leave hooks open and this module, at the top layer, fills them: the tenant page and the
backends list get live backend health, the script page's console gets the real dry run
(chistone_site.simulation), and every script change (publish, activate with the stored
tests, roll out, roll back, shadow, remove) goes through the action layer
(chistone_site.actions), as it does from the API. The dashboard on the admin index is the
`gateway_dashboard` tag (templatetags/chistone_admin); the console's own pages are
chistone_site.admin_console.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse

from chistone_site import actions
from chistone_site.actions.rollouts import latest_rollout
from chistone_site.actions.shadows import latest_shadow, running_shadow
from chistone_site.admin_gateway import gateway_report
from chistone_site.simulation import simulate
from luascripts.admin import ScriptVersionAdmin
from luascripts.models import ScriptVersion
from tenants.admin import BackendAdmin, TenantAdmin
from tenants.admin_scoping import visible_tenants
from tenants.audit import Actor
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
    def perform_publish(self, request, *, tenant: Tenant, source: str,
                        message: str) -> tuple[ScriptVersion, bool]:
        published = actions.do_publish_script(actor=Actor.for_user(request.user),
                                              tenant=tenant, source=source, message=message,
                                              allow_draft=True)
        return published.version, published.created

    def perform_activate(self, request, *, tenant: Tenant, version: ScriptVersion,
                         percent: int = 100, key_header: str = "",
                         guard: dict[str, Any] | None = None,
                         override_reason: str | None = None) -> dict[str, Any]:
        override = (actions.Override.for_user(request.user, override_reason)
                    if override_reason is not None else None)
        activation = actions.do_activate_version(
            actor=Actor.for_user(request.user), tenant=tenant, version=version,
            percent=percent, key_header=key_header, guard=actions.Guard.parse(guard),
            override=override)
        return {"test_results": activation.test_results, "overridden": activation.overridden,
                "rollout": actions.rollout_report(activation.rollout)}

    def perform_deactivate(self, request, *, tenant: Tenant) -> None:
        actions.do_deactivate_script(actor=Actor.for_user(request.user), tenant=tenant)

    def perform_rollout(self, request, *, tenant: Tenant, percent: int | None = None,
                        rollback: bool = False) -> dict[str, Any] | None:
        actor = Actor.for_user(request.user)
        if rollback:
            rollout = actions.do_end_rollout(actor=actor, tenant=tenant)
        else:
            rollout = actions.do_set_rollout_percent(actor=actor, tenant=tenant,
                                                     percent=percent or 100)
        return actions.rollout_report(rollout)

    def perform_shadow(self, request, *, tenant: Tenant, version: ScriptVersion | None = None,
                       sample_rate: float = 0.1, stop: bool = False) -> None:
        actor = Actor.for_user(request.user)
        if stop:
            actions.do_stop_shadow(actor=actor, tenant=tenant)
        else:
            assert version is not None
            actions.do_start_shadow(actor=actor, tenant=tenant, version=version,
                                    sample_rate=sample_rate)

    def stored_test_results(self, *, tenant: Tenant, version: ScriptVersion
                            ) -> list[dict[str, Any]] | None:
        return actions.do_test_version(tenant=tenant, version=version)

    def traffic_state(self, *, tenant: Tenant) -> dict[str, Any]:
        rollout = actions.running_rollout(tenant) or latest_rollout(tenant)
        shadow = running_shadow(tenant) or latest_shadow(tenant)
        return {"rollout": actions.rollout_report(rollout),
                "shadow": actions.shadow_report(shadow)}

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
