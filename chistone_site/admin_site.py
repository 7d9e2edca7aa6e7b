"""The admin site of the control plane: branded chistone, with the console's own pages.

Installed as Django's default admin site (chistone_site.apps.ChistoneAdminConfig), so every
`admin.site.register` and `admin.register` lands here. Django's conventions stay: changelists,
filters, actions and permissions work as in any Django admin. What it adds:

- the brand (header, title), and no "View site" link: the control plane has no public site;
- the console pages (chistone_site.admin_console): traffic per tenant, route and backend,
  and the lookup of recent requests.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import path


class ChistoneAdminSite(AdminSite):
    site_header = "chistone"
    site_title = "chistone console"
    index_title = "Operators' console"
    site_url = None  # no "View site": the control plane serves no site of its own

    def get_urls(self):
        from chistone_site import admin_console

        wrap = self.admin_view
        return [
            path("traffic/", wrap(admin_console.traffic_view), name="traffic"),
            path("traffic/<int:tenant_id>/", wrap(admin_console.tenant_traffic_view),
                 name="tenant_traffic"),
            path("requests/", wrap(admin_console.requests_view), name="requests"),
            *super().get_urls(),
        ]
