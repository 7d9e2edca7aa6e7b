"""Admin registration for script versions (read-only: a stored version never changes)."""

from django.contrib import admin

from luascripts.models import ScriptVersion


@admin.register(ScriptVersion)
class ScriptVersionAdmin(admin.ModelAdmin):
    list_display = ("tenant", "number", "valid", "author", "created_at", "message")
    list_filter = ("valid", "tenant")
    search_fields = ("tenant__slug", "message", "sha256", "author")
    readonly_fields = ("tenant", "number", "source", "sha256", "message", "author", "created_at",
                       "valid", "errors", "routes", "tests")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
