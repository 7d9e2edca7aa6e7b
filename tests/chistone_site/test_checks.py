import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from chistone_site import checks
from chistone_site.conf import DEV_SECRET_KEY


def ids(messages):
    return [m.id for m in messages]


def test_daphne_missing_is_an_error(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    assert ids(checks.check_installed_apps(None)) == ["chistone.E001"]


def test_daphne_not_first_is_a_warning(settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS[1:], "daphne"]
    assert ids(checks.check_installed_apps(None)) == ["chistone.W001"]


def test_the_default_configuration_is_clean():
    assert checks.check_installed_apps(None) == []
    assert checks.check_listeners(None) == []


def test_shared_ports_bad_trusted_proxies_and_listen_mode(settings):
    settings.CHISTONE = {**settings.CHISTONE, "DATA_PORT": 9000, "CONTROL_PORT": 9000,
                         "TRUSTED_PROXIES": ["10.0.0.0/8", "not-a-net"], "LISTEN": "fair"}
    assert ids(checks.check_listeners(None)) == ["chistone.E003", "chistone.E004",
                                                  "chistone.E005"]


def test_debug_with_the_development_secret_key(settings):
    settings.SECRET_KEY = DEV_SECRET_KEY
    settings.DEBUG = True
    assert ids(checks.check_secret_key(None)) == ["chistone.E002"]
    settings.DEBUG = False
    assert ids(checks.check_secret_key(None)) == ["chistone.W002"]
    settings.SECRET_KEY = "x" * 60
    assert checks.check_secret_key(None) == []


def test_check_deploy_fails_on_debug_with_default_key(settings):
    settings.SECRET_KEY = DEV_SECRET_KEY
    settings.DEBUG = True
    with pytest.raises(SystemCheckError, match="chistone.E002"):
        call_command("check", "--deploy", "--fail-level", "ERROR")


def test_serve_refuses_one_port_for_both_planes():
    with pytest.raises(CommandError, match="must differ"):
        call_command("serve", "--data-port", "8100", "--control-port", "8100")


def test_serve_refuses_an_unknown_listen_mode_from_the_environment(settings):
    settings.CHISTONE = {**settings.CHISTONE, "LISTEN": "fair"}
    with pytest.raises(CommandError, match="must be one of reuseport, shared, not 'fair'"):
        call_command("serve", "--data-port", "8100", "--control-port", "8101",
                     skip_checks=True)


def test_serve_reports_a_port_in_use(settings):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match="Cannot listen on 127.0.0.1: Address already"):
            call_command("serve", "--host", "127.0.0.1", "--data-port", str(port),
                         "--control-port", str(port + 1 if port < 65535 else port - 1),
                         "--workers", "2")
    finally:
        taken.close()


def test_an_unknown_chistone_key_is_an_error(settings):
    assert checks.check_setting_names(None) == []
    settings.CHISTONE = {"TRUSTED_PROXIES": [], "LUA_LIMITS": {"request_cpu_ms": 5}}
    [error] = checks.check_setting_names(None)
    assert error.id == "chistone.E007" and "LUA_LIMITS" in error.msg



@pytest.mark.django_db
def test_shared_state_without_redis_on_several_workers_is_a_warning(settings, tenant_factory,
                                                                   actor):
    from chistone_site import actions

    settings.CHISTONE = {**settings.CHISTONE, "WORKERS": 4}
    plain = tenant_factory("plain")
    limited = tenant_factory("limited")
    for tenant, source in (
            (plain, 'chi.get("/", function(req) local shared = {} return respond(200, "") end)'),
            (limited, 'chi.use(middleware.rate_limit{rate = 5, per = 60})\n'
                      'chi.get("/", function(req) return respond(200, "") end)')):
        published = actions.do_publish_script(actor=actor, tenant=tenant, source=source,
                                              allow_draft=True)
        actions.do_activate_version(actor=actor, tenant=tenant, version=published.version)
    messages = checks.check_shared_state(None)
    assert ids(messages) == ["chistone.W003"]
    assert "(limited)" in messages[0].msg and "4 x N" in messages[0].msg
    settings.CHISTONE = {**settings.CHISTONE, "WORKERS": 1}
    assert checks.check_shared_state(None) == []
    settings.CHISTONE = {**settings.CHISTONE, "WORKERS": 4,
                         "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert checks.check_shared_state(None) == []
