"""iotadmin settings: embedded defaults, production switched on by environment variables.

Every variable is listed in .env.example. Unset, the app uses SQLite under var/, the
in-memory channel layer and the local hub in var/localhub.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

from localhub.files import create_private, open_private, private_dir

BASE_DIR = Path(__file__).resolve().parent.parent
# The app's own files (keys, the SQLite database, logs): this user's only.
VAR_DIR = private_dir(Path(os.environ.get("IOTADMIN_VAR_DIR", BASE_DIR / "var")))


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _development_secret_key() -> str:
    """Generated once and kept under var/, so sessions survive restarts."""
    path = VAR_DIR / "secret-key"
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


# Off unless asked for: the debug page shows settings and local variables. `make run` asks
# (its server binds 127.0.0.1); even then only signed-in staff on loopback see it, scrubbed
# of secrets (iotadmin/error_reports.py).
DEBUG = envbool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY") or _development_secret_key()
SECRET_KEY_IS_DEFAULT = not env("SECRET_KEY")
ALLOWED_HOSTS = [h.strip() for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")]
# Behind a TLS-terminating proxy: the public origin(s), e.g. https://iotadmin.example.com
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

# The hub: a real Azure IoT Hub when IOTHUB_CONNECTION_STRING is set, else localhub.
IOTHUB_CONNECTION_STRING = env("IOTHUB_CONNECTION_STRING")
IOTHUB_CA_FILE = env("IOTHUB_CA_FILE")
LOCALHUB_DIR = Path(env("LOCALHUB_DIR", str(VAR_DIR / "localhub")))
# `make run` (iotadmin/run.py): the web app's port on 127.0.0.1, and the address the local
# hub listens on (HTTPS 8443, MQTT 8883).
RUN_PORT = int(env("IOTADMIN_PORT", "8000"))
LOCALHUB_HOST = env("LOCALHUB_HOST", "localhost")

INSTALLED_APPS = [
    "daphne",  # its runserver serves websockets too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "devices",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "iotadmin.urls"
ASGI_APPLICATION = "iotadmin.asgi.application"
WSGI_APPLICATION = None

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
                "devices.context_processors.hub",
            ],
        },
    },
]

# No persistent connections: under ASGI each request's sync code runs in a thread of its
# own, and a connection kept open stays with that thread (Django's docs say to disable them
# there): 50 concurrent users exhausted Postgres's 100 connections. Postgres gets a pool
# instead, bounded per process, which several web processes share the server's limit with.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'iotadmin.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A request waits up to 10 s for a free connection, then fails with a clear error.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": 20,
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _sqlite = Path(DATABASES["default"]["NAME"])
    if _sqlite.parent.is_dir() and str(_sqlite) != ":memory:":
        # Sessions live here: 0600 before SQLite first opens it (its -wal and -shm files
        # take the database's mode).
        create_private(_sqlite)
    DATABASES["default"]["OPTIONS"] = {
        # Readers never wait for a writer in WAL mode, and a writer waits its turn for up to
        # 20 s instead of failing at once with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 20,
        # Take the write lock at BEGIN: a read-then-write transaction cannot deadlock on an
        # upgrade (SQLite would answer "database is locked" without waiting).
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Where simulated modules hand their events to the web app (devices/consumers.py,
# IngestConsumer): a web process's own address as this machine reaches it, never one taken
# from a request (whoever names it would receive the simulator's token). Default: `make run`'s.
EVENTS_URL = env("IOTADMIN_EVENTS_URL", f"ws://127.0.0.1:{RUN_PORT}/ws/ingest/")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "devices:device-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic fills it for production; until it has (a checkout, `make run`) the finders
# serve static/ directly. Made empty so WhiteNoise has no missing folder to warn about.
STATIC_ROOT = private_dir(VAR_DIR / "static")
WHITENOISE_USE_FINDERS = True

# Error pages and reports never show a secret (iotadmin/error_reports.py).
DEFAULT_EXCEPTION_REPORTER = "iotadmin.error_reports.LocalOnlyReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "iotadmin.error_reports.SecretsFilter"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", not DEBUG)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own handler would print every line a second time beside the root one.
        "django": {"handlers": [], "propagate": True},
        "azure": {"level": "WARNING"},
        "uamqp": {"level": "WARNING"},
    },
}

# -- security: HTTPS, headers, login throttling -------------------------------------------
# With DEBUG off, plain http is redirected to https and browsers are told to keep to https
# (HSTS, a year by default). Behind a TLS-terminating proxy, SECURE_PROXY_SSL_HEADER names
# the header it sets to "https" (e.g. HTTP_X_FORWARDED_PROTO): only if the proxy always
# sets it, or a client could claim https. Websockets read it too (devices/origins.py).
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True  # sent only with SECURE_HSTS_SECONDS > 0
_proxy_ssl_header = env("SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
# Preloading HSTS is the registered domain owner's decision, submitted by hand, not the app's.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Content-Security-Policy (django-csp 4): nothing inline, nothing from elsewhere. 'self'
# covers the page's own ws:/wss: in CSP Level 3, which the live module page connects to.
INSTALLED_APPS += ["csp", "axes"]
MIDDLEWARE += [
    "csp.middleware.CSPMiddleware",
    "devices.logins.LockedLoginsWait",
    "axes.middleware.AxesMiddleware",  # last, as axes requires: turns lockouts into its page
]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# django-axes: after AXES_FAILURE_LIMIT failed logins for an account (from anywhere) or from
# a client address (for any account), logins are refused for AXES_COOLOFF_TIME without
# checking (or hashing) the password (devices/logins.py); a success resets the count.
# Admins see and clear lockouts in the Django admin (Axes > Access attempts), or
# `manage.py axes_reset`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins before hashing
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 20
AXES_COOLOFF_TIME = 0.25  # hours: 15 minutes
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# Attempts while locked are not counted (no database write: a flood of them stays cheap), so
# the lock ends AXES_COOLOFF_TIME after the last counted failure.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"  # answered with 429
# Behind a proxy every client has the proxy's address: CLIENT_IP_HEADER names the header
# (as in request.META, e.g. HTTP_X_FORWARDED_FOR) in which the proxy puts the client's.
CLIENT_IP_HEADER = env("CLIENT_IP_HEADER")
AXES_CLIENT_IP_CALLABLE = "devices.logins.client_ip"
# Its INFO lines are one per login attempt; lockouts are WARNINGs.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}
