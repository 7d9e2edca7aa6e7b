"""`/api/v1/`: tenants, backends, script versions, rollouts, shadows, simulate, config
documents, the schema."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from chistone_site.api import views
from chistone_site.api.authentication import ApiKeyAuthentication, StaffSessionAuthentication

app_name = "api"


class SchemaView(SpectacularAPIView):
    """The OpenAPI document is public: it describes the API, it holds no tenant data."""

    authentication_classes = [ApiKeyAuthentication, StaffSessionAuthentication]


class SwaggerView(SpectacularSwaggerView):
    authentication_classes = [ApiKeyAuthentication, StaffSessionAuthentication]


tenant = "tenants/<str:slug>/"
version = f"{tenant}scripts/<int:version>/"

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("schema/swagger/", SwaggerView.as_view(url_name="api:schema"), name="swagger"),
    path("tenants/", views.TenantListView.as_view(), name="tenant-list"),
    path(tenant, views.TenantDetailView.as_view(), name="tenant-detail"),
    path(f"{tenant}backends/", views.BackendListView.as_view(), name="backend-list"),
    path(f"{tenant}backends/<str:name>/", views.BackendDetailView.as_view(),
         name="backend-detail"),
    path(f"{tenant}scripts/", views.ScriptListView.as_view(), name="script-list"),
    path(f"{tenant}scripts/validate/", views.ValidateView.as_view(), name="script-validate"),
    path(version, views.ScriptDetailView.as_view(), name="script-detail"),
    path(f"{version}activate/", views.ActivateView.as_view(), name="script-activate"),
    path(f"{version}diff/", views.DiffView.as_view(), name="script-diff"),
    path(f"{version}test/", views.TestView.as_view(), name="script-test"),
    path(f"{tenant}rollout/", views.RolloutView.as_view(), name="rollout"),
    path(f"{tenant}rollback/", views.RollbackView.as_view(), name="rollback"),
    path(f"{tenant}shadow/", views.ShadowView.as_view(), name="shadow"),
    path(f"{tenant}simulate/", views.SimulateView.as_view(), name="simulate"),
    path(f"{tenant}config/", views.ConfigView.as_view(), name="config"),
    re_path(r"", views.UnknownView.as_view(), name="unknown"),
]
