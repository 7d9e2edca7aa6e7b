"""Control-plane URLs. The data plane never reaches Django (see chistone_site/planes.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("chistone_site.api.urls")),
]
