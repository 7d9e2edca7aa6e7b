from django.apps import AppConfig


class ChistoneSiteConfig(AppConfig):
    name = "chistone_site"
    verbose_name = "chistone"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chistone_site import checks  # noqa: F401  (registers the system checks)
