"""The one settings module: every deployment difference comes from the environment.

The variables, their defaults and their meaning are declared in `chistone_site.conf` (and the
data plane's in `routing.conf`), read once below through `django_environment()`, and listed
in docs/operations.md. This module reads no variable itself.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chistone_site.conf import django_environment, process_environment
from routing.setting import SettingError

try:
    _env = django_environment()
except SettingError as exc:
    raise ImproperlyConfigured(f"{exc}.") from None

SECRET_KEY = _env.secret_key
DEBUG = _env.debug
# The control plane is reached by operators; tenant traffic never reaches Django at all.
ALLOWED_HOSTS = list(_env.allowed_hosts)
CSRF_TRUSTED_ORIGINS = list(_env.csrf_trusted_origins)

VAR_DIR = _env.var_dir

INSTALLED_APPS = [
    "daphne",
    "chistone_site.apps.ChistoneAdminConfig",  # django.contrib.admin, branded (admin_site)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_ace",
    "axes",
    "tenants",
    "luascripts",
    "routing",
    "chistone_site",
    "chistone_site.api",
]

MIDDLEWARE = [
    # First: X-Forwarded-Proto counts only from CHISTONE_TRUSTED_PROXIES (SECURE_PROXY_SSL_HEADER
    # alone would believe any peer), before SecurityMiddleware redirects on it.
    "chistone_site.trusted_proxies.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's own static files (its CSS, the ace editor) from this process: no CDN.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chistone_site.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes) first, then the ordinary user database.
AUTHENTICATION_BACKENDS = [
    "tenants.admin_security.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "chistone_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "chistone_site.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(_env.database_url, conn_max_age=_env.db_conn_max_age)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Several gateway workers may share one SQLite file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Served by WhiteNoise from the apps' static folders, so `serve` needs no collectstatic step.
# STATIC_ROOT (filled by collectstatic) is then optional; `serve` creates it so WhiteNoise need
# not warn. Importing the settings creates nothing outside a SQLite database's folder.
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True

# Behind a TLS-terminating proxy (docs/operations.md, "Production behind TLS"). The proxy's
# X-Forwarded-Proto is believed only from CHISTONE_TRUSTED_PROXIES: TrustedProxyMiddleware
# rewrites it from routing.forwarded's verdict, or drops it, before anything reads it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _env.ssl_redirect
SESSION_COOKIE_SECURE = _env.secure_cookies
CSRF_COOKIE_SECURE = _env.secure_cookies
SECURE_HSTS_SECONDS = _env.hsts_seconds
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env.hsts_include_subdomains
SECURE_HSTS_PRELOAD = _env.hsts_preload

# Admin login throttling: after AXES_FAILURE_LIMIT failed logins from one client IP (the
# gateway's own client address, routing.forwarded), that IP is refused until the cool-off ends.
AXES_ENABLED = _env.login_throttle
AXES_FAILURE_LIMIT = _env.login_failure_limit
AXES_COOLOFF_TIME = timedelta(minutes=_env.login_cooloff_minutes)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "chistone_site.trusted_proxies.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"
AXES_VERBOSE = False
CSRF_COOKIE_HTTPONLY = False

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # API keys and staff sessions only: never Basic (see chistone_site/api/authentication.py).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chistone_site.api.authentication.ApiKeyAuthentication",
        "chistone_site.api.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["chistone_site.api.permissions.HasScopes"],
    "EXCEPTION_HANDLER": "chistone_site.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "chistone control-plane API",
    "DESCRIPTION": "Tenants, backends and versioned Lua route scripts for the chistone gateway.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Gateway and serve settings (routing.conf, chistone_site.conf): the ones the environment
# sets; their accessors add the defaults.
CHISTONE = _env.chistone

# One JSON object per line (routing.logs), with the request id, tenant and route of the request
# a record was written for; CHISTONE_LOG_FORMAT=plain for human-readable lines instead.
try:
    LOG_FORMAT = process_environment().log_format
except SettingError as exc:
    raise ImproperlyConfigured(f"{exc}.") from None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "routing.logs.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": _env.log_level},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
