"""Settings shared by every environment; `local`, `production` and `test` refine them."""

from __future__ import annotations

from datetime import timedelta

from csp.constants import NONCE, NONE, SELF

from chatsite.env import BASE_DIR, anthropic_api_key, database_url, env, redis_url

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne first: its `runserver` serves ASGI, so streaming works in development too.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files, no CDN
    "csp",
    "accounts",
    "chat",
]

# WhiteNoise is sync-only, and it is last on purpose. Django adapts between
# sync and async once per middleware boundary where the mode changes, and
# Django's own middleware, run in async mode, hops to a thread for each of
# its hooks. With the one sync-only middleware innermost, the whole chain runs
# in sync mode: one hop into a request thread per request (DRF's views are
# sync anyway), and one back out for the async stream view. Static files are
# still served by WhiteNoise, after the (cheap, lazy) middleware above it.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

# --- Security headers. Model output is untrusted HTML-to-be: the policy is the last line of
# defence (no inline script, no remote images). `NONCE` is only put into the header on pages
# that use `request.csp_nonce` (the Swagger UI template); every other page gets plain 'self'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Stream URLs carry a token in their query string: never send them in a Referer.
SECURE_REFERRER_POLICY = "same-origin"

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

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

DATABASES = {"default": database_url(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}


def use_connection_pool(database: dict) -> None:
    """PostgreSQL: a psycopg pool per process.

    Under ASGI every request runs its sync code on a thread of its own, so
    persistent connections (CONN_MAX_AGE) would pile up one per thread; a pool
    hands connections back when each request ends.
    """
    if database["ENGINE"].endswith("postgresql"):
        database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env.int("DJANGO_DB_POOL_SIZE", default=10),
            "timeout": 10,
        }


def tune_sqlite(database: dict) -> None:
    """SQLite: runs checkpoint while requests write, so writers must queue, not fail.

    IMMEDIATE transactions take the write lock up front (no deadlock between two
    readers upgrading), the busy timeout waits for it, and WAL lets readers go on.
    """
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("OPTIONS", {}).update(
            {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
        # Keep connections open: the runs' writes share one thread, and opening
        # a connection (with the PRAGMAs above) on every checkpoint cost more
        # than the write. A request's own thread ends with the request, and its
        # connection is closed with it.
        database.setdefault("CONN_MAX_AGE", None)


use_connection_pool(DATABASES["default"])
tune_sqlite(DATABASES["default"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Channel layer: live fan-out only (at-most-once); never the replay source.
# Each process has one channel that carries every event its streams watch
# (chat/fanout.py), so it needs far more room than the default 100 messages.
_CHANNEL_CAPACITY = {"specific.*": env.int("CHAT_LAYER_CAPACITY", default=20_000)}
REDIS_URL = redis_url()
# A socket timeout above channels_redis's 5 s BZPOPMIN (its list-based layer), so
# an idle receive is not cut off by redis-py's own timeout.
_REDIS_HOSTS = [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 2}]
if REDIS_URL and env.str("CHAT_REDIS_LAYER", default="pubsub") == "pubsub":
    # Redis PUBLISH/SUBSCRIBE: one round trip per event, pushed to each process's
    # subscription. channels_redis's list-based layer takes about five (group
    # lookup, expiry, a Lua send, a blocking pop) and was most of the CPU per
    # token with Redis (see the README's performance section). Both are
    # at-most-once; streams repair what is lost from the replay buffer.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": _REDIS_HOSTS},
        }
    }
elif REDIS_URL:  # CHAT_REDIS_LAYER=core: channels_redis's list-based layer
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": _REDIS_HOSTS, "channel_capacity": _CHANNEL_CAPACITY},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # Its channel_capacity patterns are not compiled (channels 4.3), so
            # set the capacity for all channels: in this process they are all ours.
            "CONFIG": {"capacity": _CHANNEL_CAPACITY["specific.*"]},
        }
    }

# DRF throttling counts in the cache: shared through Redis when there is one.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }

# --- Chat: the provider backend, the replay buffer, limits and pacing.
ANTHROPIC_API_KEY = anthropic_api_key()
CHAT_MODEL = env.str("CHAT_MODEL", default="claude-sonnet-4-5")
if ANTHROPIC_API_KEY:
    CHAT_PROVIDER = {
        "BACKEND": "chat.providers.anthropic.AnthropicProvider",
        "OPTIONS": {
            "api_key": ANTHROPIC_API_KEY,
            "base_url": env.str("ANTHROPIC_BASE_URL", default=None) or None,
            "max_retries": env.int("ANTHROPIC_MAX_RETRIES", default=2),
            "connect_timeout": env.float("ANTHROPIC_CONNECT_TIMEOUT", default=10.0),
            # Silence longer than this mid-stream is a stall: the SDK default is 10 minutes.
            "read_timeout": env.float("ANTHROPIC_READ_TIMEOUT", default=60.0),
            # Upstream connections per process: one per answer being generated.
            "max_connections": env.int("ANTHROPIC_MAX_CONNECTIONS", default=10_000),
        },
    }
else:
    CHAT_PROVIDER = {
        "BACKEND": "chat.providers.demo.DemoProvider",
        "OPTIONS": {"tokens_per_second": env.float("CHAT_DEMO_TOKENS_PER_SECOND", default=30.0)},
    }
CHAT_REPLAY_TTL = env.float("CHAT_REPLAY_TTL_SECONDS", default=300.0)
if REDIS_URL:
    CHAT_REPLAY_BUFFER = {
        "BACKEND": "chat.replay.RedisReplayBuffer",
        "OPTIONS": {"url": REDIS_URL, "ttl": CHAT_REPLAY_TTL},
    }
else:
    CHAT_REPLAY_BUFFER = {
        "BACKEND": "chat.replay.InMemoryReplayBuffer",
        "OPTIONS": {"ttl": CHAT_REPLAY_TTL},
    }
CHAT_MAX_TOKENS = env.int("CHAT_MAX_TOKENS", default=4096)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32_000)
# Threads that run requests' sync code (middleware, DRF views), reused across
# requests: see chatsite/handlers.py. Few, because they share one GIL with the event
# loop: at 100 streams, 4 instead of 8 halved the relay's median latency (25 -> 11 ms)
# and gave 8% more tokens/s; 2 halved it again, but then two slow stops (which wait up
# to 2 s for the run's final save) would hold every thread.
CHAT_REQUEST_THREADS = env.int("CHAT_REQUEST_THREADS", default=4)
CHAT_CHECKPOINT_INTERVAL = env.float("CHAT_CHECKPOINT_INTERVAL", default=0.5)
CHAT_SSE_RETRY_MS = env.int("CHAT_SSE_RETRY_MS", default=2000)
CHAT_SSE_HEARTBEAT_SECONDS = env.float("CHAT_SSE_HEARTBEAT_SECONDS", default=15.0)
# A message in flight that a stream hears nothing about for this long is looked
# up in stored state (the channel layer is at-most-once: its end may be lost).
CHAT_SSE_QUIET_SECONDS = env.float("CHAT_SSE_QUIET_SECONDS", default=3.0)
# Runs hold a lease renewed every heartbeat; a run whose lease lapses (its
# process died) is ended `interrupted` by any process's sweeper.
CHAT_RUN_LEASE = timedelta(seconds=env.float("CHAT_RUN_LEASE_SECONDS", default=15.0))
CHAT_RUN_HEARTBEAT_SECONDS = env.float("CHAT_RUN_HEARTBEAT_SECONDS", default=5.0)
CHAT_DRAIN_SECONDS = env.float("CHAT_DRAIN_SECONDS", default=20.0)
# Whether this process ends other processes' orphaned runs. Every process of a
# site should (the default); only a process that shares a database with another
# site (as the tests' daphne processes do) must not.
CHAT_SWEEP_ORPHANS = env.bool("CHAT_SWEEP_ORPHANS", default=True)
CHAT_REDIS_TIMEOUT = env.float("CHAT_REDIS_TIMEOUT_SECONDS", default=2.0)
CHAT_MAX_STREAMS_PER_USER = env.int("CHAT_MAX_STREAMS_PER_USER", default=20)
CHAT_STREAM_TOKEN_LIFETIME = timedelta(
    seconds=min(env.int("CHAT_STREAM_TOKEN_LIFETIME_SECONDS", default=120), 300)
)

# --- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first: its WWW-Authenticate header makes anonymous requests 401, not 403.
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "chat.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chat.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "message_send": env.str("CHAT_SEND_RATE", default="30/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    "DESCRIPTION": "Conversations, messages and SSE stream tokens. Streams are served at "
    "/stream/conversations/{id}/ as text/event-stream.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "chatsite.logging.RedactTokensFilter"},
        "one_line_errors": {"()": "chatsite.logging.OneLineErrors"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_tokens"]},
    },
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "channels_redis.pubsub": {"filters": ["one_line_errors"]},
    },
}
