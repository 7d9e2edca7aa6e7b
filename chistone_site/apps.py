from django.apps import AppConfig
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
