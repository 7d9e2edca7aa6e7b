from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core.signals import setting_changed


class ChistoneSiteConfig(AppConfig):
    name = "chistone_site"
    verbose_name = "chistone"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chistone_site import (
            checks,  # noqa: F401  (registers the system checks)
            conf,
        )

        # Tests that override settings.CHISTONE get a fresh ServeConf.
        setting_changed.connect(conf.reset, dispatch_uid="chistone_site.conf.reset")


class ChistoneAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with chistone's site as the default one (admin.site)."""

    default = False  # named in INSTALLED_APPS; ChistoneSiteConfig stays this module's default

    default_site = "chistone_site.admin_site.ChistoneAdminSite"
