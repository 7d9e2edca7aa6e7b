"""The script pages of the admin: edit (publish), history, diff, activate/roll back, try.

Mixed into the ScriptVersion ModelAdmin, which gives them the admin site, permissions and the
tenant scoping. Views stay thin: a form, one service call, a redirect or a template.

Permissions: seeing the pages needs `luascripts.view_scriptversion`; saving a new version
`luascripts.add_scriptversion`; activating, rolling out, rolling back, shadowing or removing
the active script changes the tenant, so it needs `tenants.change_tenant`; activating although
stored tests fail needs `luascripts.override_script_tests` as well. All of them only for
visible tenants.

Every change goes through the action layer (chistone_site.actions): luascripts cannot import
it (the layers contract), so the `perform_*` hooks below are filled by the gateway-aware admin
(chistone_site.admin), as `simulate_request` is. Without it, nothing is activated: an
activation that skipped the stored tests would be the hole this layering closes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from luascripts import admin_diff
from luascripts.forms import (
    EDITOR,
    ActivateForm,
    CompareForm,
    DryRunForm,
    PublishForm,
    RolloutForm,
    ShadowForm,
)
from luascripts.models import ScriptFault, ScriptVersion
from tenants.admin_scoping import get_visible_tenant_or_404
from tenants.errors import ServiceError, Unprocessable
from tenants.models import Tenant

UNAVAILABLE = ("This installation has no action layer for scripts "
               "(chistone_site.admin provides it): nothing was changed.")

STARTER_SCRIPT = """\
-- Routes for this tenant. chi.get/post/..., chi.route, chi.mount and chi.use register them;
-- a handler returns proxy(backend, opts), respond(status, body, headers) or reject(status, msg).

chi.get("/", function(req)
  return respond(200, "hello from " .. req.tenant)
end)
"""


def _error_lines(errors: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_line: dict[int, list[dict[str, Any]]] = {}
    for error in errors or []:
        line = error.get("line")
        if isinstance(line, int) and line > 0:
            by_line.setdefault(line, []).append(error)
    return by_line


def numbered_source(source: str, errors: list[dict[str, Any]], *, around: int | None = None):
    """Rows (number, text, errors) of `source`; with `around`, only lines near an error."""
    by_line = _error_lines(errors)
    lines = source.splitlines() or [""]
    coloured = admin_diff.highlight(source) or [""]
    keep = None
    if around is not None:
        keep = {n for line in by_line for n in range(line - around, line + around + 1)}
    rows: list[dict[str, Any]] = []
    last = 0
    for number, text in enumerate(lines, start=1):
        if keep is None or number in keep:
            if number > last + 1:
                rows.append({"gap": True})
            rows.append({"number": number, "text": text, "errors": by_line.get(number, []),
                         "html": coloured[number - 1] if number <= len(coloured) else text})
            last = number
    # Errors past the last line (e.g. "unexpected end of file") still deserve a row.
    for line in sorted(n for n in by_line if n > len(lines)):
        rows.append({"number": line, "text": "", "errors": by_line[line]})
    return rows


class ScriptPagesMixin:
    """Custom admin views for one tenant's script, mounted under the ScriptVersion admin."""

    # Overridden by the gateway-aware admin (chistone_site.admin) with the real simulation:
    # a stored `version`, or unsaved `source` (the editor's text) when version is None.
    def simulate_request(self, *, tenant: Tenant, version: ScriptVersion | None,
                         request_data: dict[str, Any], source: str | None = None
                         ) -> dict[str, Any] | None:
        return None

    # The action layer (chistone_site.admin fills these). Each raises a ServiceError with a
    # message for the operator when it refuses; a refused activation's Unprocessable carries
    # the stored tests' results in `detail["test_results"]`.
    def perform_publish(self, request, *, tenant: Tenant, source: str,
                        message: str) -> tuple[ScriptVersion, bool]:
        raise ServiceError(UNAVAILABLE)

    def perform_activate(self, request, *, tenant: Tenant, version: ScriptVersion,
                         percent: int = 100, key_header: str = "",
                         guard: dict[str, Any] | None = None,
                         override_reason: str | None = None) -> dict[str, Any]:
        raise ServiceError(UNAVAILABLE)

    def perform_deactivate(self, request, *, tenant: Tenant) -> None:
        raise ServiceError(UNAVAILABLE)

    def perform_rollout(self, request, *, tenant: Tenant, percent: int | None = None,
                        rollback: bool = False) -> dict[str, Any] | None:
        raise ServiceError(UNAVAILABLE)

    def perform_shadow(self, request, *, tenant: Tenant, version: ScriptVersion | None = None,
                       sample_rate: float = 0.1, stop: bool = False) -> None:
        raise ServiceError(UNAVAILABLE)

    def stored_test_results(self, *, tenant: Tenant, version: ScriptVersion
                            ) -> list[dict[str, Any]] | None:
        """The version's stored tests run now (a preview on the confirmation page)."""
        return None

    def traffic_state(self, *, tenant: Tenant) -> dict[str, Any]:
        """{"rollout": report or None, "shadow": report or None} (chistone_site.actions)."""
        return {"rollout": None, "shadow": None}

    # -- URLs ------------------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        pages = [
            ("tenant/<int:tenant_id>/", self.script_view, "script"),
            ("tenant/<int:tenant_id>/try/", self.try_view, "try"),
            ("tenant/<int:tenant_id>/diff/", self.diff_view, "diff"),
            ("tenant/<int:tenant_id>/v<int:number>/", self.version_view, "version"),
            ("tenant/<int:tenant_id>/v<int:number>/activate/", self.activate_view, "activate"),
            ("tenant/<int:tenant_id>/deactivate/", self.deactivate_view, "deactivate"),
            ("tenant/<int:tenant_id>/rollout/", self.rollout_view, "rollout"),
            ("tenant/<int:tenant_id>/shadow/", self.shadow_view, "shadow"),
        ]
        urls = [path(route, wrap(view), name=f"{prefix}_{name}") for route, view, name in pages]
        return urls + super().get_urls()

    def page_url(self, name: str, tenant: Tenant, *args: Any, query: dict | None = None) -> str:
        url = reverse(f"{self.admin_site.name}:luascripts_scriptversion_{name}",
                      args=[tenant.pk, *args])
        return f"{url}?{urlencode(query)}" if query else url

    # -- permissions and lookups -------------------------------------------------------------

    def can_publish(self, request) -> bool:
        return request.user.has_perm("luascripts.add_scriptversion")

    def can_activate(self, request) -> bool:
        return request.user.has_perm("tenants.change_tenant")

    def can_override(self, request) -> bool:
        return self.can_activate(request) and request.user.has_perm(
            "luascripts.override_script_tests")

    def _tenant(self, request, tenant_id: int) -> Tenant:
        if not self.has_view_permission(request):
            raise PermissionDenied
        # Another tenant's script answers 404, exactly like a tenant that does not exist.
        return get_visible_tenant_or_404(request.user, pk=tenant_id)

    def _version(self, tenant: Tenant, number: int) -> ScriptVersion:
        version = ScriptVersion.objects.filter(tenant=tenant, number=number).first()
        if version is None:
            raise Http404("No such version.")
        version.tenant = tenant
        return version

    def _versions(self, tenant: Tenant) -> list[ScriptVersion]:
        versions = list(ScriptVersion.objects.filter(tenant=tenant).order_by("-number")
                        .select_related("fault"))
        for version in versions:
            version.tenant = tenant
        return versions

    def _context(self, request, tenant: Tenant, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": None,
            "tenant": tenant,
            "tenant_url": reverse(f"{self.admin_site.name}:tenants_tenant_change",
                                  args=[tenant.pk]),
            "script_url": self.page_url("script", tenant),
            "can_publish": self.can_publish(request),
            "can_activate": self.can_activate(request),
            **extra,
        }

    # -- the script page: editor, console, history --------------------------------------------

    def script_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        if request.method == "POST":
            return self._publish(request, tenant)
        versions = self._versions(tenant)
        base = self._base_version(request, tenant, versions)
        form = PublishForm(initial={"source": base.source if base else STARTER_SCRIPT})
        return self._render_script_page(request, tenant, versions, base, form)

    def _base_version(self, request, tenant, versions) -> ScriptVersion | None:
        """What the editor starts from: the version asked for (`from`), else the active one
        (never a newer, possibly broken, draft), else the newest."""
        wanted = request.GET.get("from") or request.POST.get("from")
        if wanted and wanted.isdigit():
            for version in versions:
                if version.number == int(wanted):
                    return version
            raise Http404("No such version.")
        active = next((v for v in versions if v.pk == tenant.active_version_id), None)
        return active or (versions[0] if versions else None)

    def _publish(self, request, tenant: Tenant):
        if not self.can_publish(request):
            raise PermissionDenied
        form = PublishForm(request.POST)
        if form.is_valid():
            try:
                version, created = self.perform_publish(
                    request, tenant=tenant, source=form.cleaned_data["source"],
                    message=form.cleaned_data["message"])
            except ServiceError as exc:
                form.add_error("source", exc.message)
            else:
                self._report_publish(request, version, created)
                return HttpResponseRedirect(self.page_url(
                    "script", tenant, query={"from": version.number}))
        versions = self._versions(tenant)
        base = self._base_version(request, tenant, versions)
        return self._render_script_page(request, tenant, versions, base, form)

    def _report_publish(self, request, version: ScriptVersion, created: bool) -> None:
        if not created:
            self.message_user(request, f"This source is identical to v{version.number}: "
                                       "nothing new was stored.", messages.INFO)
        elif version.valid:
            self.message_user(request, f"Saved v{version.number}. It is not active yet: try it "
                                       "in the console below, then activate it.",
                              messages.SUCCESS)
        else:
            count = len(version.errors)
            self.message_user(request, f"Saved as draft v{version.number} with {count} "
                                       f"error{'s' if count != 1 else ''}. A draft is never "
                                       "activated: fix the script and save again.",
                              messages.ERROR)

    def _render_script_page(self, request, tenant, versions, base, form, *, console=None,
                            result=None, status=200):
        active = next((v for v in versions if v.pk == tenant.active_version_id), None)
        editor_text = form["source"].value() or ""
        unsaved = base is None or editor_text != base.source
        errors = base.errors if base is not None and not base.valid and not unsaved else []
        if console is None:
            console = DryRunForm(versions=versions, active_id=tenant.active_version_id,
                                 initial=self._console_initial(tenant, active or base),
                                 editor=self.can_publish(request))
        compare = CompareForm(versions=versions, initial={
            "a": active.number if active else (versions[-1].number if versions else None),
            "b": versions[0].number if versions else None, "mode": "side"})
        context = self._context(
            request, tenant, f"Route script: {tenant.slug}",
            versions=versions, active=active, base=base, form=form, errors=errors,
            error_rows=numbered_source(form["source"].value() or "", errors, around=2)
            if errors else [],
            console=console, result=result, compare=compare,
            base_rows=numbered_source(base.source, base.errors) if base is not None else [],
            unsaved=unsaved and base is not None, editor_text=editor_text,
            media=self.media + form.media,
            try_url=self.page_url("try", tenant),
            diff_url=self.page_url("diff", tenant),
            deactivate_url=self.page_url("deactivate", tenant),
            simulation_available=self.simulation_available(),
            **self._traffic_context(tenant, versions, active),
        )
        return TemplateResponse(request, "admin/luascripts/script.html", context,
                                status=status)

    def _traffic_context(self, tenant: Tenant, versions, active) -> dict[str, Any]:
        state = self.traffic_state(tenant=tenant)
        rollout, shadow = state.get("rollout"), state.get("shadow")
        candidates = [v for v in versions if v.valid and active is not None
                      and v.pk != active.pk and not getattr(v, "fault", None)]
        return {
            "rollout": rollout,
            "rollout_running": bool(rollout and rollout["state"] == "running"),
            "auto_rollback": rollout if rollout and rollout["state"] == "auto_rolled_back"
            else None,
            "rollout_form": RolloutForm(initial={"percent": rollout["percent"]})
            if rollout and rollout["state"] == "running" else None,
            "rollout_url": self.page_url("rollout", tenant),
            "shadow": shadow,
            "shadow_running": bool(shadow and shadow["state"] == "running"),
            "shadow_form": ShadowForm(versions=candidates) if candidates else None,
            "shadow_url": self.page_url("shadow", tenant),
        }

    def simulation_available(self) -> bool:
        return type(self).simulate_request is not ScriptPagesMixin.simulate_request

    def _console_initial(self, tenant: Tenant, version: ScriptVersion | None) -> dict:
        host = tenant.domains[0].replace("*.", "www.") if tenant.domains else "localhost"
        return {"version": str(version.number) if version else EDITOR, "method": "GET",
                "host": host, "path": (tenant.path_prefix or "") + "/"}

    # -- dry run ---------------------------------------------------------------------------

    def try_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        if request.method != "POST":
            return HttpResponseRedirect(self.page_url("script", tenant))
        versions = self._versions(tenant)
        console = DryRunForm(request.POST, versions=versions,
                             active_id=tenant.active_version_id,
                             editor=self.can_publish(request))
        result = None
        base = self._base_version(request, tenant, versions)
        # The editor's text travels with every Run: the page comes back with it, unsaved.
        source = request.POST.get("source")
        if source is None or not self.can_publish(request):
            source = base.source if base else STARTER_SCRIPT
        status = 200
        if console.is_valid():
            data = console.cleaned_data
            request_data = {"method": data["method"], "host": data["host"],
                            "path": data["path"], "query": data["query"],
                            "headers": data["headers"], "body": data["body"],
                            "upstream": data["upstream"], "calls": data["calls"]}
            if data["version"] == EDITOR:
                version = None
                result = self.simulate_request(tenant=tenant, version=None,
                                               request_data=request_data, source=source)
            else:
                version = self._version(tenant, int(data["version"]))
                result = self.simulate_request(tenant=tenant, version=version,
                                               request_data=request_data)
            if result is None:
                result = {"error": "The dry run is not available in this installation."}
            result = {**result, "version": version, "from_editor": version is None,
                      "base": base}
        else:
            status = 400
        form = PublishForm(initial={"source": source,
                                    "message": request.POST.get("message", "")})
        return self._render_script_page(request, tenant, versions, base, form,
                                        console=console, result=result, status=status)

    # -- one version ----------------------------------------------------------------------

    def version_view(self, request, tenant_id: int, number: int):
        tenant = self._tenant(request, tenant_id)
        version = self._version(tenant, number)
        fault = ScriptFault.objects.filter(version=version).first()
        context = self._context(
            request, tenant, f"{tenant.slug}: version {version.number}",
            version=version, fault=fault,
            rows=numbered_source(version.source, version.errors),
            activate_url=self.page_url("activate", tenant, version.number),
            edit_url=self.page_url("script", tenant, query={"from": version.number}),
            diff_active_url=self.page_url("diff", tenant, query={
                "a": tenant.active_version.number, "b": version.number})
            if tenant.active_version_id and tenant.active_version_id != version.pk else None,
        )
        return TemplateResponse(request, "admin/luascripts/version.html", context)

    # -- diff -------------------------------------------------------------------------------

    def diff_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        versions = self._versions(tenant)
        if not versions:
            raise Http404("This tenant has no script versions yet.")
        active = next((v for v in versions if v.pk == tenant.active_version_id), None)
        query = request.GET.copy()
        query.setdefault("b", str(versions[0].number))
        query.setdefault("a", str(active.number if active else versions[-1].number))
        query.setdefault("mode", "side")
        compare = CompareForm(query, versions=versions)
        if not compare.is_valid():
            raise Http404("No such version.")
        old = self._version(tenant, compare.cleaned_data["a"])
        new = self._version(tenant, compare.cleaned_data["b"])
        mode = compare.cleaned_data["mode"] or "side"
        context = self._context(
            request, tenant, f"{tenant.slug}: v{old.number} \u2192 v{new.number}",
            old=old, new=new, compare=compare, mode=mode, active=active,
            old_label=self._label(old, active), new_label=self._label(new, active),
            **self._diff_context(old.source, new.source, mode, old_routes=old.routes,
                                 new_routes=new.routes),
            swap_url=self.page_url("diff", tenant, query={
                "a": new.number, "b": old.number, "mode": mode}),
            other_mode_url=self.page_url("diff", tenant, query={
                "a": old.number, "b": new.number,
                "mode": "unified" if mode == "side" else "side"}),
            diff_url=self.page_url("diff", tenant),
        )
        return TemplateResponse(request, "admin/luascripts/diff.html", context)

    @staticmethod
    def _label(version: ScriptVersion, active: ScriptVersion | None) -> str:
        suffix = " (active)" if active is not None and version.pk == active.pk else ""
        return f"v{version.number}{suffix}"

    @staticmethod
    def _diff_context(old: str, new: str, mode: str, *, old_routes=None, new_routes=None
                      ) -> dict[str, Any]:
        # Unified rows always: narrow screens show the unified diff whatever the mode.
        return {
            "stats": admin_diff.stats(old, new),
            "side_rows": admin_diff.side_by_side(old, new) if mode == "side" else None,
            "unified_rows": admin_diff.unified(old, new),
            "route_changes": admin_diff.route_changes(old_routes, new_routes),
        }

    # -- activate / roll back / deactivate -------------------------------------------------

    def activate_view(self, request, tenant_id: int, number: int):
        tenant = self._tenant(request, tenant_id)
        if not self.can_activate(request):
            raise PermissionDenied
        version = self._version(tenant, number)
        active = tenant.active_version
        if request.method == "POST":
            return self._activate(request, tenant, version, active)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "POST"])
        form = ActivateForm()
        return self._render_activate(request, tenant, version, active, form,
                                     self._preview_tests(tenant, version))

    def _preview_tests(self, tenant: Tenant, version: ScriptVersion):
        if not version.valid or not version.tests:
            return None
        try:
            return self.stored_test_results(tenant=tenant, version=version)
        except ServiceError:
            return None

    def _activate(self, request, tenant: Tenant, version: ScriptVersion,
                  active: ScriptVersion | None):
        form = ActivateForm(request.POST)
        if not form.is_valid():
            return self._render_activate(request, tenant, version, active, form, None,
                                         status=400)
        data = form.cleaned_data
        override = None
        if data["override"]:
            if not self.can_override(request):
                raise PermissionDenied
            override = data["reason"]
        try:
            outcome = self.perform_activate(
                request, tenant=tenant, version=version, percent=data["percent"],
                key_header=data["key_header"], guard=form.guard_spec(),
                override_reason=override)
        except Unprocessable as exc:  # stored tests failed: refused, with their results
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            return self._render_activate(request, tenant, version, active, form,
                                         detail.get("test_results"), refused=exc.message,
                                         status=422)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(self.page_url("activate", tenant, version.number))
        if outcome.get("overridden"):
            self.message_user(request, f"{len(outcome['overridden'])} failing stored test(s) "
                                       "were overridden; the audit log records why.",
                              messages.WARNING)
        rollout = outcome.get("rollout")
        if rollout and rollout["percent"] < 100:
            self.message_user(request, f"Rolling out v{version.number} to "
                                       f"{rollout['percent']}% of {tenant.slug}'s requests "
                                       f"(sticky by {rollout['key']}). Raise it to 100% to "
                                       "complete, or roll back.", messages.SUCCESS)
        else:
            verb = ("Rolled back to" if active and active.number > version.number
                    else "Activated")
            guarded = " under a guard" if rollout else ""
            self.message_user(request, f"{verb} v{version.number} for {tenant.slug}{guarded}; "
                                       "the gateway picks it up without a restart.",
                              messages.SUCCESS)
        return HttpResponseRedirect(self.page_url("script", tenant))

    def _render_activate(self, request, tenant: Tenant, version: ScriptVersion,
                         active: ScriptVersion | None, form: ActivateForm,
                         test_results: list[dict[str, Any]] | None, *, refused: str = "",
                         status: int = 200):
        mode = "unified" if request.GET.get("mode") == "unified" else "side"
        fault = ScriptFault.objects.filter(version=version).first()
        rollback = active is not None and active.number > version.number
        failing = [r for r in test_results or [] if not r.get("passed")]
        rollout = self.traffic_state(tenant=tenant).get("rollout")
        context = self._context(
            request, tenant,
            f"{'Roll back' if rollback else 'Activate'} {tenant.slug} to v{version.number}?",
            version=version, active=active, rollback=rollback, fault=fault, mode=mode,
            already_active=active is not None and active.pk == version.pk,
            refused=(not version.valid) or fault is not None,
            refusal=refused, form=form, test_results=test_results, failing=failing,
            can_override=self.can_override(request),
            running_rollout=rollout if rollout and rollout["state"] == "running" else None,
            old_label=self._label(active, active) if active else "(no active version)",
            new_label=self._label(version, active),
            other_mode_url=self.page_url("activate", tenant, version.number, query={
                "mode": "unified" if mode == "side" else "side"}),
            shadow_url=self.page_url("shadow", tenant),
            **self._diff_context(active.source if active else "", version.source, mode,
                                 old_routes=active.routes if active else [],
                                 new_routes=version.routes),
        )
        return TemplateResponse(request, "admin/luascripts/activate.html", context,
                                status=status)

    # -- rollouts and shadows -----------------------------------------------------------------

    def rollout_view(self, request, tenant_id: int):
        """POST: change the running rollout's share (`_percent`), complete it (`_complete`),
        or roll it back (`_rollback`)."""
        tenant = self._tenant(request, tenant_id)
        if not self.can_activate(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            if "_rollback" in request.POST:
                self.perform_rollout(request, tenant=tenant, rollback=True)
                self.message_user(request, f"Rolled back: {tenant.slug}'s previous version "
                                           "answers every request again.", messages.SUCCESS)
            else:
                form = RolloutForm({"percent": "100"} if "_complete" in request.POST
                                   else request.POST)
                if not form.is_valid():
                    self.message_user(request, "The share is a whole number from 1 to 100.",
                                      messages.ERROR)
                    return HttpResponseRedirect(self.page_url("script", tenant))
                percent = form.cleaned_data["percent"]
                self.perform_rollout(request, tenant=tenant, percent=percent)
                self.message_user(request, "Rollout completed: the new version is active."
                                  if percent == 100 else
                                  f"The rollout now answers {percent}% of requests.",
                                  messages.SUCCESS)
        except Unprocessable as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            failed = [r["name"] for r in detail.get("test_results") or [] if not r["passed"]]
            self.message_user(request, f"{exc.message} Failing: {', '.join(failed)}.",
                              messages.ERROR)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(self.page_url("script", tenant) + "#traffic")

    def shadow_view(self, request, tenant_id: int):
        """POST: start a version as the shadow (`version`, `sample_rate` in %), or `_stop`."""
        tenant = self._tenant(request, tenant_id)
        if not self.can_activate(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            if "_stop" in request.POST:
                self.perform_shadow(request, tenant=tenant, stop=True)
                self.message_user(request, "The shadow stopped; its figures stay below.",
                                  messages.SUCCESS)
            else:
                form = ShadowForm(request.POST, versions=self._versions(tenant))
                if not form.is_valid():
                    self.message_user(request, "Pick a version and a sample from 0.01 to "
                                               "100%.", messages.ERROR)
                    return HttpResponseRedirect(self.page_url("script", tenant))
                version = self._version(tenant, form.cleaned_data["version"])
                rate = form.cleaned_data["sample_rate"] / 100
                self.perform_shadow(request, tenant=tenant, version=version, sample_rate=rate)
                self.message_user(request, f"Shadow started: v{version.number} decides on "
                                           f"{form.cleaned_data['sample_rate']:g}% of "
                                           f"{tenant.slug}'s requests, without effects.",
                                  messages.SUCCESS)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(self.page_url("script", tenant) + "#traffic")

    def deactivate_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        if not self.can_activate(request):
            raise PermissionDenied
        if request.method == "POST":
            try:
                self.perform_deactivate(request, tenant=tenant)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(self.page_url("script", tenant))
            self.message_user(request, f"{tenant.slug} has no active script now: its traffic "
                                       "goes to its enabled backends.", messages.SUCCESS)
            return HttpResponseRedirect(self.page_url("script", tenant))
        context = self._context(request, tenant, f"Remove the active script of {tenant.slug}?",
                                active=tenant.active_version)
        return TemplateResponse(request, "admin/luascripts/deactivate.html", context)
