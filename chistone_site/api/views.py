"""Thin views: shape checks by serializers, one service call each, answers by serializers.

Authentication, scopes, tenant scoping, throttling, errors and the request id all come from
`ApiView`; the views only say which scopes a request needs and which service to call.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from chistone_site import actions, simulation
from chistone_site.actions.rollouts import latest_rollout
from chistone_site.actions.scripts import Override
from chistone_site.actions.shadows import latest_shadow, running_shadow
from chistone_site.api import config_sync
from chistone_site.api import serializers as s
from chistone_site.api.authentication import (
    ApiKeyAuthentication,
    Principal,
    StaffSessionAuthentication,
    principal_of,
)
from chistone_site.api.exceptions import REQUEST_ID_HEADER, exception_handler, request_id_for
from chistone_site.api.models import SCOPE_ACTIVATE, SCOPE_READ, SCOPE_WRITE
from chistone_site.api.permissions import CanCreateTenants, HasScopes, scoped_tenants
from chistone_site.api.schema import ChistoneAutoSchema
from chistone_site.api.throttling import KeyWriteThrottle
from luascripts import services as script_services
from luascripts.models import ScriptVersion
from tenants import services as tenant_services
from tenants.audit import Actor
from tenants.models import Backend, Tenant

_TRUE = (True, "true", "True", "1", 1, "yes", "on")


def _flag(request, name: str) -> bool:
    data = request.data
    return isinstance(data, dict) and data.get(name) in _TRUE


class ApiView(generics.GenericAPIView):
    authentication_classes = [ApiKeyAuthentication, StaffSessionAuthentication]
    permission_classes = [HasScopes]
    throttle_classes = [KeyWriteThrottle]
    schema = ChistoneAutoSchema()

    def get_exception_handler(self):
        return exception_handler

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response[REQUEST_ID_HEADER] = request_id_for(request)
        return response

    @property
    def principal(self) -> Principal:
        return principal_of(self.request)

    @property
    def actor(self) -> Actor:
        return self.principal.actor


class TenantScopedView(ApiView):
    """A view below `tenants/{slug}/`: the tenant is looked up among those the caller reaches."""

    def get_tenant(self) -> Tenant:
        if not hasattr(self, "_tenant"):
            self._tenant = get_object_or_404(
                scoped_tenants(self.principal).select_related("active_version"),
                slug=self.kwargs["slug"])
        return self._tenant


@extend_schema(exclude=True)
class UnknownView(ApiView):
    """Any other URL below /api/v1/: the JSON 404 of the API rather than Django's HTML page."""

    permission_classes = []

    def dispatch_unknown(self, request, *args, **kwargs):
        raise NotFound("No such API endpoint.")

    get = post = put = patch = delete = head = options = dispatch_unknown


# -- tenants -------------------------------------------------------------------------------


@extend_schema(tags=["tenants"])
class TenantListView(generics.ListCreateAPIView, ApiView):
    serializer_class = s.TenantSerializer
    permission_classes = [HasScopes, CanCreateTenants]

    def get_queryset(self):
        return scoped_tenants(self.principal).select_related("active_version").order_by("slug")

    def perform_create(self, serializer):
        serializer.instance = tenant_services.create_tenant(
            actor=self.actor, **serializer.validated_data)


@extend_schema(tags=["tenants"])
class TenantDetailView(generics.RetrieveUpdateDestroyAPIView, ApiView):
    serializer_class = s.TenantSerializer
    lookup_field = "slug"

    def get_queryset(self):
        return scoped_tenants(self.principal).select_related("active_version")

    def perform_update(self, serializer):
        serializer.instance = tenant_services.update_tenant(
            actor=self.actor, tenant=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        tenant_services.delete_tenant(actor=self.actor, tenant=instance)


# -- backends ------------------------------------------------------------------------------


@extend_schema(tags=["backends"])
class BackendListView(generics.ListCreateAPIView, TenantScopedView):
    serializer_class = s.BackendSerializer

    def get_queryset(self):
        return Backend.objects.filter(tenant=self.get_tenant()).order_by("name")

    def perform_create(self, serializer):
        serializer.instance = tenant_services.create_backend(
            actor=self.actor, tenant=self.get_tenant(), **serializer.validated_data)


@extend_schema(tags=["backends"])
class BackendDetailView(generics.RetrieveUpdateDestroyAPIView, TenantScopedView):
    serializer_class = s.BackendSerializer
    lookup_field = "name"

    def get_queryset(self):
        return Backend.objects.filter(tenant=self.get_tenant()).select_related("tenant")

    def perform_update(self, serializer):
        serializer.instance = tenant_services.update_backend(
            actor=self.actor, backend=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        tenant_services.delete_backend(actor=self.actor, backend=instance)


# -- scripts -------------------------------------------------------------------------------


def _override(view: ApiView, data: dict) -> actions.Override | None:
    """The override of failing tests the request asks for, if its key may make it."""
    if not data.get("override_tests"):
        return None
    return Override.for_scopes(view.principal.scopes, data.get("reason") or "")


def _activation_body(activation: actions.Activation) -> dict:
    rollout = activation.rollout
    return s.ActivationResultSerializer(activation.version, context={
        "created": False, "test_results": activation.test_results,
        "rollout": actions.rollout_report(rollout) if rollout is not None else None,
        "overridden": activation.overridden}).data


@extend_schema(tags=["scripts"])
class ScriptListView(generics.ListCreateAPIView, TenantScopedView):
    """Versions, newest first; POST publishes (idempotent by content)."""

    serializer_class = s.ScriptVersionSerializer

    def get_required_scopes(self, request):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return {SCOPE_READ}
        return {SCOPE_WRITE, SCOPE_ACTIVATE} if _flag(request, "activate") else {SCOPE_WRITE}

    def get_queryset(self):
        return ScriptVersion.objects.filter(tenant=self.get_tenant()).select_related(
            "tenant").order_by("-number")

    def get_serializer_class(self):
        # The browsable API's form for POST is the publish body, not a version.
        return s.PublishSerializer if self.request.method == "POST" else s.ScriptVersionSerializer

    @extend_schema(
        request=s.PublishSerializer,
        responses={201: s.PublishResultSerializer,
                   200: OpenApiResponse(s.PublishResultSerializer,
                                        description="The same source was already published.")},
        description="Publish a version: 201 when new, 200 with the existing version when the "
                    "same source was published before. An invalid source answers 400 with "
                    "`errors` and stores nothing. The answer carries `route_changes` against "
                    "the active version. With `activate: true`, failing tests answer 422 with "
                    "`test_results`; the version is stored but not active.",
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = actions.do_publish_script(actor=self.actor, tenant=self.get_tenant(),
                                           **serializer.validated_data)
        body = s.PublishResultSerializer(result.version, context={
            "created": result.created, "test_results": result.test_results,
            "route_changes": result.route_changes.to_dict()
            if result.route_changes is not None else None}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created
                        else status.HTTP_200_OK)


@extend_schema(tags=["scripts"])
class ScriptDetailView(generics.RetrieveAPIView, TenantScopedView):
    serializer_class = s.ScriptVersionDetailSerializer

    def get_object(self):
        return script_services.get_version(tenant=self.get_tenant(),
                                           number=self.kwargs["version"])


@extend_schema(tags=["scripts"])
class ActivateView(TenantScopedView):
    """Activate a version after its stored tests pass: fully, or for a share of the traffic
    (a rollout), optionally under a guard. Rolling back is activating an older version (or
    `rollback/`)."""

    serializer_class = s.ActivateSerializer
    required_scopes = {"POST": {SCOPE_ACTIVATE}}

    @extend_schema(
        request=s.ActivateSerializer, responses={200: s.ActivationResultSerializer},
        description="Runs the version's stored tests against the tenant's current backends "
                    "first: a failing test answers 422 with `test_results` and changes "
                    "nothing, unless `override_tests` (the key needs the `override` scope; "
                    "the override is audited with `reason`). `percent` below 100 starts a "
                    "rollout sticky by `key_header` (or the client's IP); `guard` rolls it "
                    "back by itself when its error rate exceeds the previous version's.")
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        activation = actions.do_activate_version(
            actor=self.actor, tenant=self.get_tenant(), version=self.kwargs["version"],
            percent=data["percent"], key_header=data["key_header"],
            guard=actions.Guard.parse(data["guard"]) if data["guard"] else None,
            override=_override(self, data))
        return Response(_activation_body(activation))


@extend_schema(tags=["scripts"])
class TestView(TenantScopedView):
    """Run a stored version's tests against the tenant's current configuration."""

    serializer_class = s.TestRunSerializer
    required_scopes = {"POST": {SCOPE_READ}}

    @extend_schema(request=None, responses={200: s.TestRunSerializer})
    def post(self, request, *args, **kwargs):
        results = actions.do_test_version(tenant=self.get_tenant(),
                                          version=self.kwargs["version"])
        return Response({"version": self.kwargs["version"],
                         "passed": all(r["passed"] for r in results),
                         "test_results": results})


@extend_schema(tags=["scripts"])
class DiffView(TenantScopedView):
    serializer_class = s.DiffSerializer

    @extend_schema(parameters=[s.DiffQuerySerializer], responses={200: s.DiffSerializer})
    def get(self, request, *args, **kwargs):
        query = s.DiffQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(actions.version_diff(
            tenant=self.get_tenant(), number=self.kwargs["version"],
            against=query.validated_data.get("against")))


@extend_schema(tags=["scripts"])
class ValidateView(TenantScopedView):
    """Compile, register and run tests without storing anything."""

    serializer_class = s.ValidateSerializer
    required_scopes = {"POST": {SCOPE_READ}}

    @extend_schema(request=s.ValidateSerializer, responses={200: s.ValidateResultSerializer})
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = actions.do_validate_script(tenant=self.get_tenant(),
                                            **serializer.validated_data)
        return Response(s.ValidateResultSerializer(result).data)


# -- rollouts, rollback, shadows -----------------------------------------------------------


@extend_schema(tags=["rollouts"])
class RolloutView(TenantScopedView):
    """The tenant's running rollout (or its last one), with its guard's live figures; POST
    changes its share (100 completes it)."""

    serializer_class = s.RolloutChangeSerializer
    required_scopes = {"GET": {SCOPE_READ}, "HEAD": {SCOPE_READ}, "OPTIONS": {SCOPE_READ},
                       "POST": {SCOPE_ACTIVATE}}

    @extend_schema(responses={200: s.RolloutReportSerializer})
    def get(self, request, *args, **kwargs):
        tenant = self.get_tenant()
        rollout = actions.running_rollout(tenant) or latest_rollout(tenant)
        return Response({"rollout": actions.rollout_report(rollout)})

    @extend_schema(request=s.RolloutChangeSerializer, responses={200: s.RolloutReportSerializer},
                   description="404 without a running rollout. Completing (100) runs the "
                               "version's stored tests first, as any activation does.")
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        rollout = actions.do_set_rollout_percent(actor=self.actor, tenant=self.get_tenant(),
                                                 percent=data["percent"],
                                                 override=_override(self, data))
        return Response({"rollout": actions.rollout_report(rollout)})


@extend_schema(tags=["rollouts"])
class RollbackView(TenantScopedView):
    """Roll back: end the running rollout, or activate an older version."""

    serializer_class = s.RollbackSerializer
    required_scopes = {"POST": {SCOPE_ACTIVATE}}

    @extend_schema(request=s.RollbackSerializer, responses={200: s.ActivationResultSerializer},
                   description="With a rollout running, it ends (the previous version keeps "
                               "every request). Otherwise `version` (default: the version "
                               "active before the current one) is activated, after its "
                               "stored tests pass.")
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        activation = actions.do_rollback(actor=self.actor, tenant=self.get_tenant(),
                                         version=serializer.validated_data["version"])
        return Response(_activation_body(activation))


@extend_schema(tags=["rollouts"])
class ShadowView(TenantScopedView):
    """The tenant's shadow (running, or the last one) with its mismatches; POST starts one,
    DELETE stops it."""

    serializer_class = s.ShadowStartSerializer

    @extend_schema(responses={200: s.ShadowReportSerializer})
    def get(self, request, *args, **kwargs):
        tenant = self.get_tenant()
        shadow = running_shadow(tenant) or latest_shadow(tenant)
        return Response({"shadow": actions.shadow_report(shadow)})

    @extend_schema(request=s.ShadowStartSerializer, responses={201: s.ShadowReportSerializer})
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        shadow = actions.do_start_shadow(actor=self.actor, tenant=self.get_tenant(),
                                         **serializer.validated_data)
        return Response({"shadow": actions.shadow_report(shadow)},
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.ShadowReportSerializer})
    def delete(self, request, *args, **kwargs):
        shadow = actions.do_stop_shadow(actor=self.actor, tenant=self.get_tenant())
        return Response({"shadow": actions.shadow_report(shadow)})


@extend_schema(tags=["scripts"])
class SimulateView(TenantScopedView):
    """The dry run: what the gateway would do with one request. Nothing is proxied."""

    serializer_class = s.SimulateSerializer
    required_scopes = {"POST": {SCOPE_READ}}

    @extend_schema(request=s.SimulateSerializer, responses={200: s.SimulationSerializer})
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        version, source = data.pop("version", None), data.pop("source", None)
        result = simulation.simulate(tenant=self.get_tenant(), request=data,
                                     version=version, source=source)
        return Response(result.to_dict())


# -- the config document -------------------------------------------------------------------


@extend_schema(tags=["config"])
class ConfigView(TenantScopedView):
    """The tenant as one declarative document: GET dumps it, POST plans or applies it."""

    serializer_class = s.ConfigApplySerializer

    def get_required_scopes(self, request):
        if request.method in ("GET", "HEAD", "OPTIONS") or _flag(request, "dry_run"):
            return {SCOPE_READ}
        return {SCOPE_WRITE}

    @extend_schema(responses={200: s.ConfigDocumentSerializer},
                   description="The document, with the tenant's config version as its ETag.")
    def get(self, request, *args, **kwargs):
        tenant = self.get_tenant()
        return Response(config_sync.dump_config(tenant=tenant),
                        headers={"ETag": f'"{tenant.config_version}"'})

    @extend_schema(
        request=s.ConfigApplySerializer, responses={200: s.PlanSerializer},
        parameters=[OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     description="The config version (ETag) the document was "
                                                 "based on: 412 when the tenant changed since.")],
        description="Plan (`dry_run`) or apply the document in one transaction. Applying the "
                    "same document twice changes nothing the second time.",
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        plan, config_version = config_sync.apply_config_document(
            actor=self.actor, tenant=self.get_tenant(), document=data["document"],
            dry_run=data["dry_run"], prune=data["prune"],
            if_match=request.headers.get("If-Match"),
            may_activate=SCOPE_ACTIVATE in self.principal.scopes)
        body = {
            "dry_run": data["dry_run"], "applied": plan.changed and not data["dry_run"],
            "changed": plan.changed, "config_version": config_version,
            "created": plan.created, "updated": plan.updated, "deleted": plan.deleted,
            "test_results": plan.test_results,
        }
        return Response(s.PlanSerializer(body).data,
                        headers={"ETag": f'"{config_version}"'})
