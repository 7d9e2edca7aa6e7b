"""Template tags of the gateway-aware admin: the traffic dashboard on the admin index."""

from __future__ import annotations

from django import template

from chistone_site.admin_console import dashboard_context
from tenants.admin_scoping import visible_tenants

register = template.Library()


@register.inclusion_tag("admin/chistone/dashboard.html", takes_context=True)
def gateway_dashboard(context):
    request = context["request"]
    tenants = list(visible_tenants(request.user).select_related("active_version"))
    window = request.GET.get("window", "5m")
    return dashboard_context(request, tenants, window if window in ("5m", "1h") else "5m")
