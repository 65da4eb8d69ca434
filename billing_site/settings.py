"""Rentledger settings: everything that varies between machines comes from the
environment or the `.env` file that `deploy/services.py` writes."""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="insecure-dev-only-key-run-make-services")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django.contrib.humanize",
    "tenants",
    "ledger",
    "invoices",
    "payments",
    "portal",
    "dunning",
    "reports",
    "demo",
    "bench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "billing_site.middleware.NulQueryParameterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.CurrentLandlordMiddleware",
]

ROOT_URLCONF = "billing_site.urls"

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
                "tenants.context_processors.current_landlord",
            ],
        },
    },
]

WSGI_APPLICATION = "billing_site.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/rentledger")
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = env(
    "TEST_DATABASE_NAME", default="test_rentledger"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "billing_site.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="rentledger"),
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("fr", "Français"), ("es", "Español")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / ".data" / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", default=str(BASE_DIR / ".data" / "mail"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Rentledger <billing@rentledger.local>")
# dunning.sms.ConsoleSmsBackend (log), .FileSmsBackend (JSON lines in SMS_FILE_PATH)
# or .TwilioSmsBackend (the TWILIO_* settings below).
SMS_BACKEND = env("SMS_BACKEND", default="dunning.sms.FileSmsBackend")
SMS_FILE_PATH = env("SMS_FILE_PATH", default=str(BASE_DIR / ".data" / "sms" / "outbox.jsonl"))
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env("TWILIO_FROM_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env("TWILIO_MESSAGING_SERVICE_SID", default="")
TWILIO_API_BASE = env("TWILIO_API_BASE", default="")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Stripe. With no STRIPE_API_KEY the client talks to localstripe (`make run` starts it
# on 127.0.0.1:8420) with a fixed test key and a fixed dev webhook secret, so the pay
# button works offline; with a real key the API base defaults to Stripe's and the
# webhook secret must be set (without one every delivery is rejected).
_STRIPE_KEY = env("STRIPE_API_KEY", default="")
STRIPE_LOCAL = not _STRIPE_KEY
STRIPE_API_KEY = _STRIPE_KEY or "sk_test_localstripe"
STRIPE_PUBLISHABLE_KEY = env(
    "STRIPE_PUBLISHABLE_KEY", default="pk_test_localstripe" if STRIPE_LOCAL else ""
)
STRIPE_API_BASE = env(
    "STRIPE_API_BASE", default="http://127.0.0.1:8420" if STRIPE_LOCAL else "https://api.stripe.com"
)
STRIPE_WEBHOOK_SECRET = env(
    "STRIPE_WEBHOOK_SECRET", default="whsec_rentledger_local_dev" if STRIPE_LOCAL else ""
)
# Stripe.js for the tenant portal's card form: localstripe serves a stand-in with the
# same Card Element API (docs/decisions/0005-payments.md), real Stripe the real one.
STRIPE_JS_URL = env(
    "STRIPE_JS_URL",
    default=f"{STRIPE_API_BASE}/js.stripe.com/v3/" if STRIPE_LOCAL else "https://js.stripe.com/v3/",
)
STRIPE_WEBHOOK_TOLERANCE = env.int("STRIPE_WEBHOOK_TOLERANCE", default=300)
# Live mode needs each landlord's connected account; localstripe has no Connect.
STRIPE_CONNECT_REQUIRED = env.bool("STRIPE_CONNECT_REQUIRED", default=not STRIPE_LOCAL)
STRIPE_TIMEOUT_SECONDS = env.int("STRIPE_TIMEOUT_SECONDS", default=20)

# Celery: tasks are idempotent by database constraints, so late acknowledgement is
# safe and a worker killed mid-task hands its task to another (FIELD-NOTES: Celery).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than any countdown we schedule, so Redis never redelivers a waiting task early.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Emails (a PDF each) go to their own queue so 100,000 month-end receipts never delay
# the billing chunks; workers consume both queues (deploy/run.py, docker-compose.yml).
CELERY_TASK_ROUTES = {"invoices.tasks.notifications_send": {"queue": "notifications"}}
# Exactly one beat process runs this (two would double every tick: celery #2856).
CELERY_BEAT_SCHEDULE = {
    # Each tick bills whatever has become due in every landlord's own time zone and
    # resumes unfinished runs, so a missed tick or a lost chunk heals on the next one.
    "billing-runs-due": {"task": "invoices.tasks.start_due_billing_runs", "schedule": 15 * 60},
    "notifications-retry": {"task": "invoices.tasks.notifications_retry_due", "schedule": 5 * 60},
    # Stripe events whose on-commit task was lost are processed by the sweep; the
    # hourly recovery lists the last 3 days of events from the API and inserts any
    # delivery that never arrived.
    "stripe-events-sweep": {"task": "payments.tasks.stripe_events_sweep", "schedule": 5 * 60},
    "stripe-events-recover": {"task": "payments.tasks.stripe_events_recover", "schedule": 60 * 60},
    # Dunning: every hour on the hour, so any sending window of an hour or more (in
    # any time zone) contains a tick; each step is claimed once (dunning.services).
    "dunning-tick": {"task": "dunning.tasks.dunning_tick", "schedule": crontab(minute=0)},
    # Every night each landlord's hash chain and trial balance are recomputed and the
    # outcome shown on the Ledger page (ledger.services.ledger_check_record).
    "ledger-checks": {
        "task": "ledger.tasks.ledger_checks_run",
        "schedule": crontab(hour=2, minute=40),
    },
    # Credit (overpayments) pays invoices issued after it arrived.
    "tenant-credits-apply": {
        "task": "payments.tasks.tenant_credits_apply_due",
        "schedule": 15 * 60,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}
