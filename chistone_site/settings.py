"""The one settings module: every deployment difference comes from the environment.

Variables (all optional for a local try-out):
  CHISTONE_SECRET_KEY   secret key; a development default is used when unset (check chistone.W002)
  CHISTONE_DEBUG        "1" to enable DEBUG
  CHISTONE_ALLOWED_HOSTS  comma-separated control-plane hosts (default: localhost,127.0.0.1,[::1])
  DATABASE_URL          e.g. postgres://user@127.0.0.1:5432/chistone;
                        default: a SQLite file under CHISTONE_VAR_DIR
  CHISTONE_VAR_DIR      writable directory for the SQLite file and local state (default: ./var)
  CHISTONE_HOST, CHISTONE_DATA_PORT, CHISTONE_CONTROL_PORT  listeners used by `manage.py serve`
  CHISTONE_WORKERS, CHISTONE_SERVER, CHISTONE_LISTEN  worker count, ASGI server, socket sharing
  CHISTONE_TRUSTED_PROXIES  comma-separated CIDRs whose X-Forwarded-For entries are trusted
  CHISTONE_LOG_FORMAT   json (default: one JSON object per line) or plain; CHISTONE_LOG_LEVEL
  CHISTONE_LOGIN_FAILURE_LIMIT, CHISTONE_LOGIN_COOLOFF_MINUTES  admin login throttling (5, 15)
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEV_SECRET_KEY = "chistone-insecure-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("CHISTONE_SECRET_KEY", DEV_SECRET_KEY)
DEBUG = _env_bool("CHISTONE_DEBUG")
# The control plane is reached by operators; tenant traffic never reaches Django at all.
ALLOWED_HOSTS = _env_list("CHISTONE_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = _env_list("CHISTONE_CSRF_TRUSTED_ORIGINS")

VAR_DIR = Path(os.environ.get("CHISTONE_VAR_DIR", BASE_DIR / "var"))

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
        "DIRS": [BASE_DIR / "templates"],
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
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'chistone.sqlite3'}"),
        conn_max_age=int(os.environ.get("CHISTONE_DB_CONN_MAX_AGE", "0")),
    )
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
# STATIC_ROOT (filled by collectstatic) is then optional; it exists so WhiteNoise need not warn.
WHITENOISE_USE_FINDERS = True
try:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:  # a read-only tree: WhiteNoise warns once and serves from the apps anyway
    pass

SESSION_COOKIE_HTTPONLY = True

# Admin login throttling: after AXES_FAILURE_LIMIT failed logins from one client IP (computed
# like the gateway does, see tenants.admin_security), that IP is refused until the cool-off ends.
AXES_ENABLED = _env_bool("CHISTONE_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = int(os.environ.get("CHISTONE_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("CHISTONE_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "tenants.admin_security.client_ip"
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

# Gateway settings: one namespaced dict; chistone_site.conf reads it with defaults.
CHISTONE = {
    "HOST": os.environ.get("CHISTONE_HOST", "127.0.0.1"),
    "DATA_PORT": int(os.environ.get("CHISTONE_DATA_PORT", "8000")),
    "CONTROL_PORT": int(os.environ.get("CHISTONE_CONTROL_PORT", "8001")),
    "TRUSTED_PROXIES": _env_list("CHISTONE_TRUSTED_PROXIES"),
    # Worker processes of `manage.py serve`: one per core unless told otherwise.
    "WORKERS": int(os.environ.get("CHISTONE_WORKERS") or os.cpu_count() or 1),
    "SERVER": os.environ.get("CHISTONE_SERVER", "daphne"),
    # "reuseport" or "shared" (see chistone_site.workers.listeners); empty: reuseport where
    # the OS has SO_REUSEPORT.
    "LISTEN": os.environ.get("CHISTONE_LISTEN", ""),
    "WATCHDOG_SECONDS": float(os.environ.get("CHISTONE_WATCHDOG_SECONDS", "5")),
    # Overrides of luascripts.engine.Limits for scripts the gateway loads (defaults: 50 ms of
    # CPU per request, 32 MiB per runtime).
    "LUA_LIMITS": {
        key: cast(os.environ[env])
        for key, env, cast in (
            ("request_cpu_ms", "CHISTONE_LUA_REQUEST_MS", float),
            ("memory_bytes", "CHISTONE_LUA_MEMORY_BYTES", int),
        )
        if os.environ.get(env)
    },
}

# One JSON object per line (routing.logs), with the request id, tenant and route of the request
# a record was written for; CHISTONE_LOG_FORMAT=plain for human-readable lines instead.
LOG_FORMAT = os.environ.get("CHISTONE_LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"CHISTONE_LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "routing.logs.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("CHISTONE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
