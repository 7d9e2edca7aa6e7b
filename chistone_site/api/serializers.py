"""Request and response shapes. Serializers check shape only: types, required keys, lengths.

Values (slugs, hosts, URLs, ranges, scripts) are judged by the services, which answer with the
same field-error format through the one exception handler.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chistone_site.api.conf import get_conf
from luascripts.models import ScriptVersion
from tenants import backend_defaults

# -- tenants and backends ------------------------------------------------------------------


class TenantSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=63)
    name = serializers.CharField(max_length=200)
    domains = serializers.ListField(child=serializers.CharField(max_length=253),
                                    max_length=100, default=list)
    path_prefix = serializers.CharField(max_length=200, allow_blank=True, default="",
                                        trim_whitespace=False)
    active = serializers.BooleanField(default=True)
    max_request_body_bytes = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="Largest body req.body() reads (null: the gateway default, 1 MiB).")
    max_response_body_bytes = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="Largest body res.body() and http.request read (null: 1 MiB).")
    active_version = serializers.IntegerField(source="active_version.number", read_only=True,
                                              allow_null=True)
    config_version = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class BackendSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    url = serializers.CharField(max_length=500, trim_whitespace=False)
    weight = serializers.IntegerField(default=backend_defaults.WEIGHT)
    enabled = serializers.BooleanField(default=True)
    health_check_path = serializers.CharField(max_length=200, allow_blank=True, default="",
                                              trim_whitespace=False)
    connect_timeout_ms = serializers.IntegerField(default=backend_defaults.CONNECT_TIMEOUT_MS)
    read_timeout_ms = serializers.IntegerField(default=backend_defaults.READ_TIMEOUT_MS)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


# -- requests for simulate and script tests ------------------------------------------------


@extend_schema_field({"oneOf": [{"type": "string"},
                                {"type": "object", "additionalProperties": {"type": "string"}}]})
class QueryField(serializers.Field):
    """A raw query string (`a=1&b=2`) or an object of name -> value."""

    default_error_messages = {"invalid": "query must be a string or an object of strings."}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class SimRequestSerializer(serializers.Serializer):
    method = serializers.CharField(max_length=32, default="GET")
    path = serializers.CharField(max_length=8192, trim_whitespace=False)
    host = serializers.CharField(max_length=255, required=False, allow_blank=True)
    headers = serializers.DictField(child=serializers.CharField(
        max_length=8192, allow_blank=True, trim_whitespace=False), required=False)
    query = QueryField(required=False)
    client_ip = serializers.IPAddressField(required=False)
    scheme = serializers.ChoiceField(choices=["http", "https"], required=False)
    unhealthy = serializers.ListField(child=serializers.CharField(max_length=64),
                                      required=False, max_length=100)
    body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 max_length=16 * 1024 * 1024,
                                 help_text="The request body (req.body() reads it).")
    upstream = serializers.DictField(
        child=serializers.JSONField(), required=False,
        help_text="Stubs: backend name -> {status, headers, body} (or {error: refused|"
                  "timeout|broken}), what a proxied backend answers.")
    calls = serializers.DictField(
        child=serializers.JSONField(), required=False,
        help_text="Stubs: backend name -> {status, headers, body} (or {error}), what "
                  "http.request gets. Without one it returns nil, \"no_stub\".")
    shared = serializers.DictField(
        child=serializers.JSONField(), required=False,
        help_text="Shared state the run starts with: key -> string or number (shared.get "
                  "reads them). Private to the run; empty by default.")

    def validate(self, attrs):
        from routing.stubs import StubError, parse_shared_seed, parse_stubs

        for key in ("upstream", "calls"):
            try:
                parse_stubs(attrs.get(key), key)
            except StubError as exc:
                raise serializers.ValidationError({key: [str(exc)]}) from None
        try:
            parse_shared_seed(attrs.get("shared"), "shared")
        except StubError as exc:
            raise serializers.ValidationError({"shared": [str(exc)]}) from None
        return attrs


class ExpectSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["proxy", "respond", "reject", "error"],
                                   required=False)
    status = serializers.IntegerField(required=False, allow_null=True)
    backend = serializers.CharField(max_length=64, required=False, allow_null=True)
    upstream_path = serializers.CharField(max_length=8192, required=False, allow_null=True,
                                          trim_whitespace=False)
    headers = serializers.DictField(child=serializers.CharField(
        allow_null=True, allow_blank=True, trim_whitespace=False), required=False)
    route_pattern = serializers.CharField(required=False, allow_null=True,
                                          trim_whitespace=False)
    params = serializers.DictField(child=serializers.CharField(allow_blank=True,
                                                               trim_whitespace=False),
                                   required=False)
    body = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                 trim_whitespace=False)
    response_status = serializers.IntegerField(required=False, allow_null=True)
    response_headers = serializers.DictField(child=serializers.CharField(
        allow_null=True, allow_blank=True, trim_whitespace=False), required=False)
    response_body = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                          trim_whitespace=False)


class ScriptTestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    request = SimRequestSerializer()
    expect = ExpectSerializer(required=False)


class TestsField(serializers.ListField):
    child = ScriptTestSerializer()

    def __init__(self, **kwargs):
        kwargs.setdefault("default", list)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > get_conf().max_tests:
            raise serializers.ValidationError(
                f"At most {get_conf().max_tests} tests per request.")
        return super().to_internal_value(data)


class SourceField(serializers.CharField):
    """Lua source, kept byte for byte (no trimming); the size limit is the service's (413)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


# -- scripts -------------------------------------------------------------------------------


class DiagnosticSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True)
    column = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class RouteSerializer(serializers.Serializer):
    method = serializers.CharField()
    pattern = serializers.CharField()
    middleware = serializers.IntegerField()
    target = serializers.CharField(allow_blank=True)
    labels = serializers.ListField(child=serializers.CharField(), required=False,
                                   help_text="The middleware, outermost first: "
                                             "\"name (line N)\" or \"anonymous (line N)\".")


class RouteSummarySerializer(serializers.Serializer):
    method = serializers.CharField()
    pattern = serializers.CharField()
    target = serializers.CharField(allow_blank=True)
    middleware = serializers.JSONField(help_text="Middleware names, outermost first (a count "
                                                 "for versions stored before names).")


class RouteChangeSerializer(serializers.Serializer):
    method = serializers.CharField()
    pattern = serializers.CharField()
    middleware = serializers.JSONField(required=False, help_text="[before, after]")
    target = serializers.JSONField(required=False, help_text="[before, after]")


class RouteChangesSerializer(serializers.Serializer):
    """Routes added, removed and changed (middleware names or target) against the active
    version, by method and pattern."""

    added = RouteSummarySerializer(many=True)
    removed = RouteSummarySerializer(many=True)
    changed = RouteChangeSerializer(many=True)


class TestResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    passed = serializers.BooleanField()
    detail = serializers.CharField(allow_blank=True)


class ScriptVersionSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="number", read_only=True)
    active = serializers.SerializerMethodField()
    routes = RouteSerializer(many=True, read_only=True)
    errors = DiagnosticSerializer(many=True, read_only=True)
    warnings = DiagnosticSerializer(many=True, read_only=True)

    class Meta:
        model = ScriptVersion
        fields = ["version", "sha256", "active", "valid", "created_at", "author", "message",
                  "routes", "errors", "warnings"]
        read_only_fields = fields

    def get_active(self, obj) -> bool:
        return obj.tenant.active_version_id == obj.pk


class ScriptVersionDetailSerializer(ScriptVersionSerializer):
    tests = ScriptTestSerializer(many=True, read_only=True)

    class Meta(ScriptVersionSerializer.Meta):
        fields = [*ScriptVersionSerializer.Meta.fields, "source", "tests"]
        read_only_fields = fields


class PublishSerializer(serializers.Serializer):
    source = SourceField()
    message = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                    default="")
    activate = serializers.BooleanField(default=False)
    tests = TestsField()


class PublishResultSerializer(ScriptVersionSerializer):
    created = serializers.SerializerMethodField()
    test_results = serializers.SerializerMethodField()
    route_changes = serializers.SerializerMethodField()

    class Meta(ScriptVersionSerializer.Meta):
        fields = [*ScriptVersionSerializer.Meta.fields, "created", "test_results",
                  "route_changes"]
        read_only_fields = fields

    def get_created(self, obj) -> bool:
        return bool(self.context.get("created"))

    @extend_schema_field(TestResultSerializer(many=True))
    def get_test_results(self, obj):
        return self.context.get("test_results", [])

    @extend_schema_field(RouteChangesSerializer(allow_null=True))
    def get_route_changes(self, obj):
        return self.context.get("route_changes")


class GuardSerializer(serializers.Serializer):
    max_error_rate = serializers.FloatField(
        min_value=0, max_value=1,
        help_text="Roll back when the new version's error share (5xx and script errors) "
                  "exceeds the previous version's by more than this (0.05 = 5 points).")
    min_requests = serializers.IntegerField(
        min_value=1, max_value=10_000_000,
        help_text="Requests the new version must have answered in the window first.")
    window_s = serializers.IntegerField(min_value=1, max_value=86_400,
                                        help_text="The window the rates are measured over.")


class ActivateSerializer(serializers.Serializer):
    percent = serializers.IntegerField(
        min_value=1, max_value=100, default=100,
        help_text="Below 100: a rollout, the version answers this share of the requests.")
    key_header = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=100,
        help_text="A rollout keeps each client on one version by this header's value "
                  "(default: the client's IP).")
    guard = GuardSerializer(required=False, allow_null=True, default=None)
    override_tests = serializers.BooleanField(
        default=False, help_text="Activate although stored tests fail: needs the "
                                 "`override` scope; audited with `reason`.")
    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   max_length=500)


class ActivationResultSerializer(PublishResultSerializer):
    rollout = serializers.SerializerMethodField()
    overridden = serializers.SerializerMethodField()

    class Meta(PublishResultSerializer.Meta):
        fields = [*PublishResultSerializer.Meta.fields, "rollout", "overridden"]
        read_only_fields = fields

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_rollout(self, obj):
        return self.context.get("rollout")

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_overridden(self, obj):
        return self.context.get("overridden", [])


class TestRunSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    passed = serializers.BooleanField()
    test_results = TestResultSerializer(many=True)


class RolloutChangeSerializer(serializers.Serializer):
    percent = serializers.IntegerField(min_value=1, max_value=100,
                                       help_text="The new share; 100 completes the rollout.")
    override_tests = serializers.BooleanField(default=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   max_length=500)


class RollbackSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1,
        help_text="Without a rollout running: the version to go back to (default: the one "
                  "active before the current one).")


class RolloutReportSerializer(serializers.Serializer):
    rollout = serializers.JSONField(allow_null=True, help_text=(
        "{id, version, previous, percent, key, key_header, guard, state (running | "
        "completed | rolled_back | auto_rolled_back), started_by, started_at, ended_by, "
        "ended_at, outcome, figures: {window_s, new: {version, requests, errors, "
        "error_rate}, old: {...}, difference, tripped}}"))


class ShadowStartSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
    sample_rate = serializers.FloatField(default=0.1, help_text="Share of requests shadowed "
                                                                "(more than 0, at most 1).")


class ShadowReportSerializer(serializers.Serializer):
    shadow = serializers.JSONField(allow_null=True, help_text=(
        "{id, version, sample_rate, state, started_by, started_at, stopped_at, compared, "
        "mismatched, dropped, routes: [{route, compared, mismatched}], samples: "
        "[{request_id, route, method, path, active, shadow}] (decisions: {kind, backend, "
        "path, query, status, error})}"))


class ValidateSerializer(serializers.Serializer):
    source = SourceField()
    tests = TestsField()


class ValidateResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = DiagnosticSerializer(many=True)
    warnings = DiagnosticSerializer(many=True)
    routes = RouteSerializer(many=True)
    is_selector = serializers.BooleanField()
    tests = TestResultSerializer(many=True)
    route_changes = RouteChangesSerializer(allow_null=True)


class DiffSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    against = serializers.IntegerField(allow_null=True)
    diff = serializers.CharField(allow_blank=True)
    route_changes = RouteChangesSerializer()


class DiffQuerySerializer(serializers.Serializer):
    against = serializers.IntegerField(required=False, min_value=0,
                                       help_text="Version to compare with (default: the active "
                                                 "version; 0: an empty script).")


# -- simulate ------------------------------------------------------------------------------


class SimulateSerializer(SimRequestSerializer):
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    source = SourceField(required=False)


class HeaderPairField(serializers.ListField):
    child = serializers.CharField(allow_blank=True)

    def __init__(self, **kwargs):
        super().__init__(min_length=2, max_length=2, **kwargs)


class ActionSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["proxy", "respond", "reject", "error"])
    status = serializers.IntegerField(allow_null=True)
    backend = serializers.CharField(allow_null=True)
    fallbacks = serializers.ListField(child=serializers.CharField())
    method = serializers.CharField(allow_null=True)
    upstream_path = serializers.CharField(allow_null=True)
    upstream_url = serializers.CharField(allow_null=True)
    upstream_headers = serializers.ListField(child=HeaderPairField(),
                                             help_text="[name, value] pairs, as sent upstream.")
    headers = serializers.ListField(child=HeaderPairField(),
                                    help_text="[name, value] pairs of a direct answer.")
    body = serializers.CharField(allow_null=True, allow_blank=True)
    message = serializers.CharField(allow_null=True, allow_blank=True)
    error = serializers.CharField(allow_null=True)


class FinalAnswerSerializer(serializers.Serializer):
    status = serializers.IntegerField()
    headers = serializers.ListField(child=HeaderPairField())
    body = serializers.CharField(allow_blank=True)


class SimulationSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    route_pattern = serializers.CharField(allow_null=True)
    params = serializers.DictField(child=serializers.CharField(allow_blank=True))
    middleware = serializers.ListField(child=serializers.CharField())
    action = ActionSerializer(allow_null=True)
    logs = serializers.ListField(child=HeaderPairField(), help_text="[level, message] pairs.")
    error = serializers.CharField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())
    response = FinalAnswerSerializer(allow_null=True, help_text=(
        "The final answer the client would get, after every middleware; null for a proxy "
        "without an `upstream` stub."))
    calls = serializers.ListField(child=serializers.DictField(), help_text=(
        "The script's http.request calls: backend, method, path, query, url, status or "
        "error."))
    exchanges = serializers.ListField(child=serializers.DictField(), help_text=(
        "Upstream exchanges a middleware opened to look at the response."))
    stopped = serializers.CharField(allow_null=True, help_text=(
        "Why the run stopped early (a middleware waited for a backend without a stub)."))


# -- the declarative config document -------------------------------------------------------


class DocTenantSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=63, required=False)
    name = serializers.CharField(max_length=200, required=False)
    domains = serializers.ListField(child=serializers.CharField(max_length=253),
                                    max_length=100, required=False)
    path_prefix = serializers.CharField(max_length=200, allow_blank=True, required=False,
                                        trim_whitespace=False)
    active = serializers.BooleanField(required=False)


class DocBackendSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    url = serializers.CharField(max_length=500, trim_whitespace=False)
    weight = serializers.IntegerField(required=False)
    enabled = serializers.BooleanField(required=False)
    health_check_path = serializers.CharField(max_length=200, allow_blank=True,
                                              required=False, trim_whitespace=False)
    connect_timeout_ms = serializers.IntegerField(required=False)
    read_timeout_ms = serializers.IntegerField(required=False)


class DocScriptSerializer(serializers.Serializer):
    source = SourceField()
    message = serializers.CharField(max_length=500, required=False, allow_blank=True)
    tests = TestsField(required=False)
    # Informational in a dump; ignored on apply (the source decides).
    version = serializers.IntegerField(required=False, allow_null=True)
    sha256 = serializers.CharField(required=False, allow_blank=True)


class ConfigDocumentSerializer(serializers.Serializer):
    tenant = DocTenantSerializer(required=False)
    backends = DocBackendSerializer(many=True, required=False)
    script = DocScriptSerializer(required=False, allow_null=True)
    config_version = serializers.IntegerField(required=False,
                                              help_text="Informational in a dump; use If-Match.")

    def validate_backends(self, value):
        names = [b["name"] for b in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise serializers.ValidationError(f"Backend names repeat: {', '.join(duplicates)}.")
        return value


class ConfigApplySerializer(serializers.Serializer):
    document = ConfigDocumentSerializer()
    dry_run = serializers.BooleanField(default=False)
    prune = serializers.BooleanField(
        default=False, help_text="Delete backends the document does not list, and deactivate "
                                 "the script when the document's script is null.")


class ChangeSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="tenant, backend, script_version or script")
    name = serializers.CharField()
    fields = serializers.DictField(required=False, child=serializers.JSONField())


class PlanSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    applied = serializers.BooleanField()
    changed = serializers.BooleanField()
    config_version = serializers.IntegerField()
    created = ChangeSerializer(many=True)
    updated = ChangeSerializer(many=True)
    deleted = ChangeSerializer(many=True)
    test_results = TestResultSerializer(many=True)


# -- errors --------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()
    request_id = serializers.CharField()
    fields = serializers.DictField(required=False, child=serializers.JSONField())
    errors = DiagnosticSerializer(many=True, required=False)
    test_results = TestResultSerializer(many=True, required=False)
    version = serializers.IntegerField(required=False)
