"""System checks with stable ids for misconfigurations that would break or weaken a gateway."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from chistone_site.workers.listeners import MODES


@register()
def check_installed_apps(app_configs, **kwargs):
    errors = []
    if "daphne" not in settings.INSTALLED_APPS:
        errors.append(Error(
            "daphne is missing from INSTALLED_APPS.",
            hint="Add 'daphne' as the first entry: `manage.py serve` runs both planes under it.",
            id="chistone.E001",
        ))
    elif settings.INSTALLED_APPS[0] != "daphne":
        errors.append(Warning(
            "daphne should be the first entry of INSTALLED_APPS so its runserver takes over.",
            id="chistone.W001",
        ))
    return errors


@register()
def check_listeners(app_configs, **kwargs):
    conf = settings.CHISTONE
    errors = []
    if conf["DATA_PORT"] == conf["CONTROL_PORT"]:
        errors.append(Error(
            f"The data plane and the control plane share port {conf['DATA_PORT']}.",
            hint="Set CHISTONE_DATA_PORT and CHISTONE_CONTROL_PORT to different ports: tenant "
                 "traffic must never reach the admin or the API.",
            id="chistone.E003",
        ))
    for net in conf.get("TRUSTED_PROXIES", []):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            errors.append(Error(
                f"CHISTONE_TRUSTED_PROXIES entry {net!r} is not an IP network.",
                hint="Use CIDR notation such as 10.0.0.0/8 or 192.0.2.7/32.",
                id="chistone.E004",
            ))
    if conf.get("LISTEN") and conf["LISTEN"] not in MODES:
        errors.append(Error(
            f"CHISTONE_LISTEN is {conf['LISTEN']!r}.",
            hint=f"Use one of {', '.join(MODES)}, or leave it unset for reuseport where the "
                 "system supports it.",
            id="chistone.E005",
        ))
    return errors


@register(Tags.security, deploy=True)
def check_secret_key(app_configs, **kwargs):
    from chistone_site.settings import DEV_SECRET_KEY

    if settings.SECRET_KEY == DEV_SECRET_KEY:
        level = Error if settings.DEBUG else Warning
        return [level(
            "The development SECRET_KEY is in use"
            + (" together with DEBUG." if settings.DEBUG else "."),
            hint="Set CHISTONE_SECRET_KEY to a long random value and leave CHISTONE_DEBUG unset.",
            id="chistone.E002" if settings.DEBUG else "chistone.W002",
        )]
    return []
