"""Forms of the script pages: publish a version, compare two, try a request (dry run)."""

from __future__ import annotations

import json

from django import forms
from django_ace import AceWidget

from luascripts.services import MAX_MESSAGE_LENGTH

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
EDITOR = "editor"  # the console's choice that runs the editor's (unsaved) text


class LuaEditor(AceWidget):
    """django-ace with Lua highlighting and line numbers, from our own static files.

    Without JavaScript it is the plain textarea it wraps. Auto-pairing of brackets is off so
    that what the operator types (or pastes) is exactly what is saved.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("mode", "lua")
        kwargs.setdefault("theme", "chrome")
        kwargs.setdefault("width", "100%")
        kwargs.setdefault("height", "420px")
        kwargs.setdefault("showprintmargin", False)
        kwargs.setdefault("tabsize", 2)
        kwargs.setdefault("behaviours", False)
        kwargs.setdefault("useworker", False)  # the server validates; ace's worker would fetch
        kwargs.setdefault("attrs", {"cols": 100, "rows": 24, "spellcheck": "false"})
        super().__init__(**kwargs)


class PublishForm(forms.Form):
    source = forms.CharField(widget=LuaEditor(), strip=False,
                             error_messages={"required": "The script is empty."})
    message = forms.CharField(
        max_length=MAX_MESSAGE_LENGTH, required=False,
        widget=forms.TextInput(attrs={"size": 80, "placeholder": "What changed, and why"}),
        help_text="Saved with the version, like a commit message.",
    )


class CompareForm(forms.Form):
    a = forms.TypedChoiceField(label="from", coerce=int)
    b = forms.TypedChoiceField(label="to", coerce=int)
    mode = forms.ChoiceField(choices=[("side", "side by side"), ("unified", "unified")],
                             initial="side", widget=forms.RadioSelect, required=False)

    def __init__(self, *args, versions=(), **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(v.number, version_label(v)) for v in versions]
        self.fields["a"].choices = choices
        self.fields["b"].choices = choices


def version_label(version, active_id=None) -> str:
    status = ("active" if version.pk == (active_id if active_id is not None
                                           else version.tenant.active_version_id)
              else ("valid" if version.valid else "draft"))
    return f"v{version.number} ({status})"


def parse_headers(text: str) -> list[tuple[str, str]]:
    """`Name: value` per line; blank lines ignored."""
    headers = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise forms.ValidationError(
                f"Line {number}: write headers as 'Name: value', one per line.")
        headers.append((name.strip().lower(), value.strip()))
    return headers


class DryRunForm(forms.Form):
    version = forms.ChoiceField(
        label="Run", help_text="The editor's text as it is now (nothing is saved), or a "
                               "stored version, drafts included.")
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial="GET")
    host = forms.CharField(max_length=253, required=False,
                           widget=forms.TextInput(attrs={"size": 30}))
    path = forms.CharField(max_length=2000, initial="/",
                           widget=forms.TextInput(attrs={"size": 50}),
                           help_text="As the client sends it, the tenant's prefix included.")
    query = forms.CharField(max_length=2000, required=False,
                            widget=forms.TextInput(attrs={"size": 50,
                                                          "placeholder": "a=1&b=2"}))
    headers = forms.CharField(required=False, widget=forms.Textarea(
        attrs={"rows": 4, "cols": 60, "placeholder": "Authorization: Bearer demo-token"}))
    body = forms.CharField(required=False, strip=False, max_length=1024 * 1024,
                           widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           help_text="The request body, for scripts that read req.body().")
    upstream = forms.CharField(
        required=False, label="Upstream stubs",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": (
            '{"users": {"status": 503, "headers": {"content-type": "text/plain"}, '
            '"body": "down"}}')}),
        help_text="JSON: backend name -> {status, headers, body} or {error: refused|timeout|"
                  "broken}, what a proxied backend answers. Without one the dry run stops at "
                  "the upstream request.")
    calls = forms.CharField(
        required=False, label="Call stubs",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": (
            '{"auth": {"status": 200, "headers": {"x-user": "alice"}}}')}),
        help_text="JSON, the same shape: what http.request(backend, ...) gets. Without one "
                  "it returns nil, \"no_stub\".")

    def __init__(self, *args, versions=(), active_id=None, editor=False, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(EDITOR, "the editor's text (unsaved)")] if editor else []
        self.fields["version"].choices = choices + [
            (str(v.number), version_label(v, active_id)) for v in versions]

    def clean_path(self) -> str:
        path = self.cleaned_data["path"].strip()
        if not path.startswith("/"):
            raise forms.ValidationError("A path starts with '/'.")
        if any(c in path for c in "\r\n\x00"):
            raise forms.ValidationError("A path cannot hold line breaks or NUL.")
        return path

    def clean_query(self) -> str:
        return self.cleaned_data["query"].strip().lstrip("?")

    def clean_headers(self) -> list[tuple[str, str]]:
        return parse_headers(self.cleaned_data["headers"])

    def _stubs(self, name: str) -> dict:
        text = (self.cleaned_data.get(name) or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("An object of backend name -> stub, e.g. "
                                        '{"users": {"status": 200, "body": "ok"}}.')
        return value

    def clean_upstream(self) -> dict:
        return self._stubs("upstream")

    def clean_calls(self) -> dict:
        return self._stubs("calls")
