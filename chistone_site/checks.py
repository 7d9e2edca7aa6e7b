"""System checks with stable ids for misconfigurations that would break or weaken a gateway."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from chistone_site import conf as site_conf
from chistone_site.workers.listeners import MODES
from routing import conf as gateway_conf
from routing.setting import SettingError


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
    conf = site_conf.get_conf()
    errors = []
    if conf.data_port == conf.control_port:
        errors.append(Error(
            f"The data plane and the control plane share port {conf.data_port}.",
            hint="Set CHISTONE_DATA_PORT and CHISTONE_CONTROL_PORT to different ports: tenant "
                 "traffic must never reach the admin or the API.",
            id="chistone.E003",
        ))
    try:
        gateway = gateway_conf.get_conf()
    except SettingError as exc:
        gateway = None
        errors.append(Error(
            f"{exc}.",
            hint="Use CIDR notation such as 10.0.0.0/8 or 192.0.2.7/32, and x-forwarded-for or "
                 "forwarded as the header.",
            id="chistone.E004",
        ))
    if conf.listen and conf.listen not in MODES:
        errors.append(Error(
            f"CHISTONE_LISTEN is {conf.listen!r}.",
            hint=f"Use one of {', '.join(MODES)}, or leave it unset for reuseport where the "
                 "system supports it.",
            id="chistone.E005",
        ))
    if settings.SECURE_SSL_REDIRECT and gateway is not None and not gateway.trusted_proxies:
        errors.append(Error(
            "CHISTONE_SSL_REDIRECT is on but no proxy is trusted: `serve` speaks plain HTTP, "
            "so every control-plane request would be redirected to HTTPS again and again.",
            hint="Set CHISTONE_TRUSTED_PROXIES to the address of the TLS-terminating proxy "
                 "that sends X-Forwarded-Proto (docs/operations.md, production behind TLS).",
            id="chistone.E006",
        ))
    return errors


@register(Tags.security, deploy=True)
def check_secret_key(app_configs, **kwargs):
    if settings.SECRET_KEY == site_conf.DEV_SECRET_KEY:
        level = Error if settings.DEBUG else Warning
        return [level(
            "The development SECRET_KEY is in use"
            + (" together with DEBUG." if settings.DEBUG else "."),
            hint="Set CHISTONE_SECRET_KEY to a long random value and leave CHISTONE_DEBUG unset.",
            id="chistone.E002" if settings.DEBUG else "chistone.W002",
        )]
    return []


@register()
def check_setting_names(app_configs, **kwargs):
    """A key of settings.CHISTONE that no accessor reads is a typo or a stale name: it would be
    ignored without a word."""
    unknown = site_conf.unknown_keys()
    return [Error(
        f"settings.CHISTONE has unknown keys: {', '.join(unknown)}.",
        hint="Use the names of docs/operations.md (Settings), without the CHISTONE_ prefix; "
             "`python -m chistone_site.conf` lists them.",
        id="chistone.E007",
    )] if unknown else []


@register(deploy=True)
def check_shared_state(app_configs, **kwargs):
    """Scripts that count across requests (shared.*, limit.allow, middleware.rate_limit) are
    only right across workers when the state is in Redis: without CHISTONE_REDIS_URL each
    worker keeps its own, and a limit of N lets N per worker through."""
    from django.db import DatabaseError

    from luascripts.engine.analysis import uses_shared_state

    try:
        gateway = gateway_conf.get_conf()
        workers = site_conf.get_conf().workers
    except SettingError:
        return []  # reported by the checks above
    if gateway.redis_url or workers <= 1:
        return []
    try:
        from tenants.models import Tenant

        users = sorted(t.slug for t in Tenant.objects.filter(active_version__isnull=False)
                       .select_related("active_version")
                       if uses_shared_state(t.active_version.source))
    except (DatabaseError, RuntimeError):
        # No database yet (a fresh install: nothing is active), or none allowed here.
        return []
    if not users:
        return []
    return [Warning(
        f"{workers} workers would serve tenants whose active scripts use shared state "
        f"({', '.join(users[:10])}{', ...' if len(users) > 10 else ''}), and "
        "CHISTONE_REDIS_URL is unset: each worker keeps its own counters, so a limit of N "
        f"lets up to {workers} x N requests through.",
        hint="Set CHISTONE_REDIS_URL (e.g. redis://127.0.0.1:6379/0) so every worker of every "
             "node shares the state (docs/operations.md, Shared state), or run one worker.",
        id="chistone.W003",
    )]
