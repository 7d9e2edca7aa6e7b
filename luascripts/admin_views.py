"""The script pages of the admin: edit (publish), history, diff, activate/roll back, try.

Mixed into the ScriptVersion ModelAdmin, which gives them the admin site, permissions and the
tenant scoping. Views stay thin: a form, one service call, a redirect or a template.

Permissions: seeing the pages needs `luascripts.view_scriptversion`; saving a new version
`luascripts.add_scriptversion`; activating, rolling back or removing the active script changes
the tenant, so it needs `tenants.change_tenant`. All of them only for visible tenants.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from luascripts import admin_diff, services
from luascripts.forms import EDITOR, CompareForm, DryRunForm, PublishForm
from luascripts.models import ScriptFault, ScriptVersion
from tenants.admin_scoping import get_visible_tenant_or_404
from tenants.audit import Actor
from tenants.errors import ServiceError
from tenants.models import Tenant

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
                version, created = services.publish_version(
                    actor=Actor.for_user(request.user), tenant=tenant,
                    source=form.cleaned_data["source"], message=form.cleaned_data["message"])
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
        )
        return TemplateResponse(request, "admin/luascripts/script.html", context,
                                status=status)

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
            try:
                services.activate_version(actor=Actor.for_user(request.user), tenant=tenant,
                                          version=version)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(self.page_url("activate", tenant, version.number))
            verb = "Rolled back to" if active and active.number > version.number else "Activated"
            self.message_user(request, f"{verb} v{version.number} for {tenant.slug}; the "
                                       "gateway picks it up without a restart.",
                              messages.SUCCESS)
            return HttpResponseRedirect(self.page_url("script", tenant))
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "POST"])
        mode = "unified" if request.GET.get("mode") == "unified" else "side"
        fault = ScriptFault.objects.filter(version=version).first()
        rollback = active is not None and active.number > version.number
        context = self._context(
            request, tenant,
            f"{'Roll back' if rollback else 'Activate'} {tenant.slug} to v{version.number}?",
            version=version, active=active, rollback=rollback, fault=fault, mode=mode,
            already_active=active is not None and active.pk == version.pk,
            refused=(not version.valid) or fault is not None,
            old_label=self._label(active, active) if active else "(no active version)",
            new_label=self._label(version, active),
            other_mode_url=self.page_url("activate", tenant, version.number, query={
                "mode": "unified" if mode == "side" else "side"}),
            **self._diff_context(active.source if active else "", version.source, mode,
                                 old_routes=active.routes if active else [],
                                 new_routes=version.routes),
        )
        return TemplateResponse(request, "admin/luascripts/activate.html", context)

    def deactivate_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        if not self.can_activate(request):
            raise PermissionDenied
        if request.method == "POST":
            services.deactivate_script(actor=Actor.for_user(request.user), tenant=tenant)
            self.message_user(request, f"{tenant.slug} has no active script now: its traffic "
                                       "goes to its enabled backends.", messages.SUCCESS)
            return HttpResponseRedirect(self.page_url("script", tenant))
        context = self._context(request, tenant, f"Remove the active script of {tenant.slug}?",
                                active=tenant.active_version)
        return TemplateResponse(request, "admin/luascripts/deactivate.html", context)
