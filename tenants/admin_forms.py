"""Forms for the tenant admin and the bridge from service errors to form errors.

The admin validates a form, then calls a service inside the admin's transaction. When the
service refuses (a ServiceError: a host already claimed, a duplicate name...), the whole
transaction is rolled back and the same POST is rendered again with the service's message
attached to the form (or inline row) it belongs to: the operator sees a form error, never a 500,
and nothing half-saved.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from tenants import services, validators
from tenants.errors import ServiceError
from tenants.models import Backend, Tenant


class ServiceRefused(Exception):
    """A service refused a write during an admin save; carries where to show the message."""

    def __init__(self, error: ServiceError, *, formset_prefix: str | None = None,
                 index: int | None = None, label: str = "") -> None:
        super().__init__(error.message)
        self.error = error
        self.formset_prefix = formset_prefix
        self.index = index
        self.label = label


def add_service_error(form: forms.BaseForm, error: ServiceError, *, label: str = "") -> None:
    """Show `error.message` on `form`, and its per-field details on the matching fields.

    Each message once: when the message only repeats a field's detail ("url: ..."), the
    field shows it and the form does not say it again.
    """
    detail = error.detail if isinstance(error.detail, dict) else {}
    shown: list[str] = []
    for field, messages in detail.items():
        items = [m for m in (messages if isinstance(messages, list) else [messages])
                 if isinstance(m, str)]
        if field in form.fields and field not in form.errors and items:
            form.add_error(field, items)
            shown += items
        elif field in form.errors:
            shown += [str(m) for m in form.errors[field]]
    if not any(error.message.endswith(item) for item in shown):
        form.add_error(None, f"{label}{error.message}")


def pending_refusal(request) -> ServiceRefused | None:
    return getattr(request, "_chistone_refusal", None)


class ServiceWriteAdminMixin:
    """Re-render a ModelAdmin's add/change form with the message of a refused service call."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            # changeform_view's transaction has been rolled back: render the POST again.
            request._chistone_refusal = refused
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        refused = pending_refusal(request)
        if refused is None or refused.formset_prefix is not None:
            return form_class

        class RefusedForm(form_class):
            def clean(self):
                cleaned = super().clean()
                add_service_error(self, refused.error, label=refused.label)
                return cleaned

        return RefusedForm


class ServiceWriteInlineMixin:
    """The inline half of ServiceWriteAdminMixin: put the message on the refused row."""

    def get_formset(self, request, obj=None, **kwargs):
        formset_class = super().get_formset(request, obj, **kwargs)
        refused = pending_refusal(request)
        if refused is None or refused.formset_prefix is None:
            return formset_class

        class RefusedFormSet(formset_class):
            def clean(self):
                super().clean()
                if self.prefix != refused.formset_prefix:
                    return
                if refused.index is not None and refused.index < len(self.forms):
                    add_service_error(self.forms[refused.index], refused.error)
                else:
                    raise ValidationError(refused.error.message)

        return RefusedFormSet


_DOMAIN_SPLIT = re.compile(r"[\s,]+")


class DomainListField(forms.CharField):
    """Host names as text, one per line; "changed" only when the set of names changed (not
    when the browser sent CRLF line ends or another order), so the change log tells truth."""

    def has_changed(self, initial, data) -> bool:
        def names(text) -> list[str]:
            if isinstance(text, (list, tuple)):
                text = "\n".join(text)
            return sorted({v.lower().rstrip(".") for v in _DOMAIN_SPLIT.split(text or "") if v})

        return names(initial) != names(data)


class TenantForm(forms.ModelForm):
    domains = DomainListField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 50}),
        help_text="Host names this tenant answers for, one per line (or comma-separated); "
                  "*.example.com for a wildcard. Leave empty to route by path prefix only.",
    )

    class Meta:
        model = Tenant
        fields = ["slug", "name", "active", "domains", "path_prefix", "max_request_body_bytes",
                  "max_response_body_bytes"]
        help_texts = {
            "path_prefix": "Optional, e.g. /globex: the tenant answers for paths under it "
                           "(on its domains, or on any host when it has none).",
            "max_request_body_bytes": "Largest request body a script may read with "
                                      "req.body() (empty: 1 MiB). Bodies scripts never read "
                                      "are streamed, whatever their size.",
            "max_response_body_bytes": "Largest body res.body() and http.request() read "
                                       "(empty: 1 MiB).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["domains"] = "\n".join(self.instance.domains or [])

    # Set by the admin: whether the operator may see every tenant (then a clash names the
    # other tenant; for a scoped operator it must not).
    sees_all_tenants = False

    def clean_domains(self) -> list[str]:
        raw = self.cleaned_data.get("domains") or ""
        values = [v for v in _DOMAIN_SPLIT.split(raw) if v]
        try:
            return validators.normalise_domains(values)
        except ValidationError:
            # Every bad name at once, not the first one only.
            errors = []
            for value in values:
                try:
                    validators.normalise_domain(value)
                except ValidationError as exc:
                    errors += exc.messages
            raise ValidationError(errors) from None

    def clean_path_prefix(self) -> str:
        return validators.normalise_path_prefix(self.cleaned_data.get("path_prefix") or "")

    def clean(self):
        """The service's rules too, so every error shows in one round (the service checks
        them again when it saves: it stays the authority)."""
        cleaned = super().clean()
        if "domains" not in cleaned or "path_prefix" not in cleaned:
            return cleaned
        domains, prefix = cleaned["domains"], cleaned["path_prefix"]
        if not domains and not prefix:
            self.add_error("domains", "Give a domain or a path prefix, or the tenant could "
                                      "never be reached.")
            return cleaned
        clashes = services.find_claim_clashes(domains=domains, path_prefix=prefix,
                                              tenant=self.instance)
        for clash in clashes:
            owner = f" (tenant {clash.tenant.slug!r})" if self.sees_all_tenants else ""
            message = (f"Another tenant{owner} already answers for "
                       f"{services.claim_label(clash.host, prefix)}.")
            self.add_error("domains" if clash.host else "path_prefix", message)
        return cleaned


class BackendForm(forms.ModelForm):
    """A backend row: the service's field rules, checked with the rest of the page."""

    class Meta:
        model = Backend
        fields = list(services.BACKEND_FIELDS)

    def clean_name(self) -> str:
        return validators.validate_backend_name(self.cleaned_data.get("name") or "")

    def clean_url(self) -> str:
        return validators.normalise_backend_url(self.cleaned_data.get("url") or "")

    def clean_health_check_path(self) -> str:
        return validators.validate_health_path(self.cleaned_data.get("health_check_path") or "")
