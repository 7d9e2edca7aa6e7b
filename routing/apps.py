from django.apps import AppConfig
from django.core.signals import setting_changed


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Gateway data plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from routing import conf

        # Tests that override settings.CHISTONE get a fresh GatewayConf.
        setting_changed.connect(conf.reset, dispatch_uid="routing.conf.reset")
