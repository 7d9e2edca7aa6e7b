"""The console pages of the admin: traffic per tenant, route and backend; recent requests.

Thin views over chistone_site.admin_gateway (which merges every worker's published figures),
scoped like everything else: an operator sees only the tenants of their access, and another
tenant's page answers 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from chistone_site import admin_gateway
from tenants.admin_scoping import (
    get_visible_tenant_or_404,
    sees_all_tenants,
    visible_tenants,
)
from tenants.models import Tenant


def _check(request) -> None:
    if not request.user.has_perm("tenants.view_tenant"):
        raise PermissionDenied


def _window(request) -> str:
    window = request.GET.get("window", "5m")
    return window if window in admin_gateway.WINDOWS else "5m"


def dashboard_context(request, tenants: list[Tenant], window: str) -> dict[str, Any]:
    """The traffic summary of `tenants` (the index page and the traffic page share it)."""
    traffic = admin_gateway.traffic_report([t.slug for t in tenants], window)
    health = admin_gateway.gateway_report([t.slug for t in tenants])
    rows = []
    for tenant in tenants:
        rows.append({
            "tenant": tenant,
            "figures": traffic.tenants[tenant.slug].total if traffic else None,
            "chart": chart_data(traffic.tenants[tenant.slug].chart) if traffic else None,
            "backends": health.tenants[tenant.slug].backends if health else [],
        })
    return {"rows": rows, "traffic": traffic, "health": health, "window": window,
            "windows": [("5m", "last 5 minutes"), ("1h", "last hour")],
            "thresholds": admin_gateway.THRESHOLDS, "request": request}


def chart_data(minutes: list[tuple[int, int, int, int]]) -> dict[str, list]:
    """uPlot's columns: minute starts, requests/s, 4xx/s and 5xx/s of each minute."""
    return {"x": [m[0] for m in minutes], "rps": [round(m[1] / 60, 3) for m in minutes],
            "c4": [round(m[2] / 60, 3) for m in minutes],
            "c5": [round(m[3] / 60, 3) for m in minutes]}


def traffic_view(request):
    _check(request)
    window = _window(request)
    tenants = list(visible_tenants(request.user).select_related("active_version"))
    context = {**admin.site.each_context(request), "title": "Traffic",
               **dashboard_context(request, tenants, window)}
    return TemplateResponse(request, "admin/chistone/traffic.html", context)


def tenant_traffic_view(request, tenant_id: int):
    _check(request)
    tenant = get_visible_tenant_or_404(request.user, pk=tenant_id)
    window = _window(request)
    traffic = admin_gateway.traffic_report([tenant.slug], window)
    health = admin_gateway.gateway_report([tenant.slug])
    context = {
        **admin.site.each_context(request), "title": f"Traffic of {tenant.slug}",
        "tenant": tenant, "window": window, "traffic": traffic, "health": health,
        "windows": [("5m", "last 5 minutes"), ("1h", "last hour")],
        "tenant_traffic": traffic.tenants[tenant.slug] if traffic else None,
        "chart": chart_data(traffic.tenants[tenant.slug].chart) if traffic else None,
        "backends": health.tenants[tenant.slug].backends if health else [],
        "requests_url": reverse("admin:requests") + f"?tenant={tenant.slug}",
    }
    return TemplateResponse(request, "admin/chistone/tenant_traffic.html", context)


class RequestSearchForm(forms.Form):
    request_id = forms.CharField(required=False, max_length=100, label="Request id",
                                 widget=forms.TextInput(attrs={"placeholder": "id or its start",
                                                               "size": 24}))
    tenant = forms.ChoiceField(required=False)
    status = forms.RegexField(required=False, regex=r"^\s*([1-5]\d\d|[1-5]xx)\s*$",
                              max_length=5, error_messages={
                                  "invalid": "A status code (502) or a class (5xx)."},
                              widget=forms.TextInput(attrs={"placeholder": "502 or 5xx",
                                                            "size": 6}))
    route = forms.CharField(required=False, max_length=200, label="Route",
                            widget=forms.TextInput(attrs={"placeholder": "/users/{id}",
                                                          "size": 20}))

    def __init__(self, *args, tenants=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "every tenant")] + [(t.slug, t.slug)
                                                                  for t in tenants]


def requests_view(request):
    _check(request)
    tenants = {t.slug: t for t in visible_tenants(request.user)
               .select_related("active_version")}
    form = RequestSearchForm(request.GET or None, tenants=tenants.values())
    rows = None
    if form.is_bound and not form.is_valid():
        rows = []
    else:
        filters = form.cleaned_data if form.is_bound else {}
        # Requests that matched no tenant ("-") belong to no operator: superusers only.
        readable = [*tenants, "-"] if sees_all_tenants(request.user) else list(tenants)
        rows = admin_gateway.recent_requests(
            readable, request_id=filters.get("request_id", ""),
            tenant=filters.get("tenant", ""), status=filters.get("status", ""),
            route=filters.get("route", ""))
        for row in rows or []:
            tenant = tenants.get(row["tenant"])
            row["when"] = datetime.fromtimestamp(row["time"], UTC)
            row["tenant_url"] = (reverse("admin:tenants_tenant_change", args=[tenant.pk])
                                 if tenant is not None else None)
            row["version_url"] = _version_url(tenant, row["version"]) if tenant else None
            row["status_class"] = ("bad" if row["status"] >= 500 else
                                   "warn" if row["status"] >= 400 else "ok")
    context = {**admin.site.each_context(request), "title": "Recent requests", "form": form,
               "rows": rows, "gateway_running": admin_gateway.running_data_plane() is not None}
    return TemplateResponse(request, "admin/chistone/requests.html", context)


def _version_url(tenant: Tenant, number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return reverse("admin:luascripts_scriptversion_version", args=[tenant.pk, number])
    except NoReverseMatch:
        return None
