"""Template tags of the gateway-aware admin: the dashboard on the admin index."""

from __future__ import annotations

from django import template

from chistone_site.admin_gateway import gateway_report
from tenants.admin_scoping import visible_tenants

register = template.Library()


@register.inclusion_tag("admin/chistone/dashboard.html", takes_context=True)
def gateway_dashboard(context):
    request = context["request"]
    tenants = list(visible_tenants(request.user).select_related("active_version"))
    report = gateway_report([t.slug for t in tenants])
    rows = [{"tenant": t, "traffic": report.tenants[t.slug] if report else None}
            for t in tenants]
    return {"rows": rows, "report": report, "request": request}
