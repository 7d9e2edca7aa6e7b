from django.apps import AppConfig


class LuascriptsConfig(AppConfig):
    name = "luascripts"
    verbose_name = "Lua route scripts"
    default_auto_field = "django.db.models.BigAutoField"
