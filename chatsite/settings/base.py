"""Settings shared by every environment; `local`, `production` and `test` refine them."""

from __future__ import annotations

from datetime import timedelta

from csp.constants import NONCE, NONE, SELF

from chat.conf import CLAUDE_MODELS, DEMO_MODELS
from chatsite.env import (
    BASE_DIR,
    anthropic_api_key,
    chat_settings_from_env,
    database_url,
    env,
    log_format,
    redis_url,
    static_root,
)

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
    # Refresh tokens are recorded when issued and blacklisted when rotated, so a used
    # one is refused (its tables need `manage.py flushexpiredtokens` now and then).
    "rest_framework_simplejwt.token_blacklist",
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
    "chatsite.middleware.DatabaseUnavailableMiddleware",
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

    Each connection is tried (an empty query) as the pool hands it out, and when the
    server ended one while it sat in the pool (a restart, a failover,
    `pg_terminate_backend`), the pool's idle connections are checked at once and the
    dead replaced, instead of failing the request or checkpoint that got it: see
    `chatsite/postgresql/base.py`. Statements cut mid-flight are chat/reconnect.py's part.
    """
    if database["ENGINE"].endswith("postgresql"):
        database["ENGINE"] = "chatsite.postgresql"
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
STATIC_ROOT = static_root()

# --- Channel layer: live fan-out only (at-most-once); never the replay source.
REDIS_URL = redis_url()
if REDIS_URL:
    # Redis PUBLISH/SUBSCRIBE: each process subscribes to the conversations its streams
    # watch, and runs publish one message per conversation per flush (chat/fanout.py).
    # At-most-once; streams repair what is lost from the replay buffer.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 2}]
            },
        }
    }
    # DRF throttling counts in the cache: shared through Redis.
    CACHES = {
        "default": {
            "BACKEND": "chatsite.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
else:
    # Its channel_capacity patterns are not compiled (channels 4.3), so set the
    # capacity for all channels: in this process they are all ours.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env.int("CHAT_LAYER_CAPACITY", default=20_000)},
        }
    }

# --- Chat. Every CHAT_* setting has its default in chat/conf.py; the environment
# overrides any of them under the same name (chatsite/env.py). What depends on the
# deployment is chosen here: the real model with an API key, Redis backends with Redis.
globals().update(chat_settings_from_env())
ANTHROPIC_API_KEY = anthropic_api_key()
if ANTHROPIC_API_KEY:
    # Claude's current models, unless the environment lists its own (`CHAT_MODELS`, JSON).
    CHAT_MODELS = globals().get("CHAT_MODELS", CLAUDE_MODELS)
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
    # Without a key there is one model to offer, whatever the environment lists.
    CHAT_MODELS = DEMO_MODELS
    CHAT_PROVIDER = {
        "BACKEND": "chat.providers.demo.DemoProvider",
        "OPTIONS": {"tokens_per_second": env.float("CHAT_DEMO_TOKENS_PER_SECOND", default=30.0)},
    }
if REDIS_URL:
    CHAT_REPLAY_BUFFER = {"BACKEND": "chat.replay.RedisReplayBuffer", "OPTIONS": {"url": REDIS_URL}}
    CHAT_STREAM_SLOTS = {"BACKEND": "chat.limits.RedisStreamSlots", "OPTIONS": {"url": REDIS_URL}}

# --- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first: its WWW-Authenticate header makes anonymous requests 401, not 403.
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        # Forms for every write the schema documents, and no inline styles (the CSP).
        "chat.api.renderers.BrowsableAPIRenderer",
    ],
    "VIEW_NAME_FUNCTION": "chat.api.renderers.view_name",
    "DEFAULT_PARSER_CLASSES": [
        "chat.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "chat.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "chat.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "message_send": env.str("CHAT_SEND_RATE", default="30/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    # A refresh returns a new refresh token and blacklists the one it used: a stolen
    # refresh token is good for one use at most, and a reused one gets 401.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Every token (access, refresh, stream) carries a fingerprint of the user's password
    # hash, checked on use: a password change refuses every token made before it.
    "CHECK_REVOKE_TOKEN": True,
    # simplejwt 5.5's refresh does not check that fingerprint (nor a deleted user).
    "TOKEN_REFRESH_SERIALIZER": "chat.api.auth.TokenRefreshSerializer",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    "DESCRIPTION": "Conversations, messages and their live events. Start at `GET /api/v1/` "
    "(links to everything); the event stream is `GET /stream/conversations/{conversation_id}/` "
    "(`text/event-stream`). Every error is `{code, message, ...}` (the `Error` component).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The API speaks JSON. Forms still parse (the browsable API posts them) but are not
    # advertised: daphne's HTTP layer (Twisted) answers some malformed multipart bodies with a
    # bare 400 before the request reaches Django, which no schema can describe.
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Enums named for what they are, not `RoleEnum` / `StatusEnum` (chat/api/schema.py).
    "ENUM_NAME_OVERRIDES": {
        "MessageRole": "chat.models.Message.Role",
        "MessageStatus": "chat.models.Message.Status",
    },
    # The SSE stream is a plain Django view: described by a stand-in (chat/api/stream_schema.py).
    "PREPROCESSING_HOOKS": ["chat.api.stream_schema.add_stream_endpoint"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chat.api.schema.postprocess",
        "chat.api.stream_schema.add_event_components",
    ],
    # Operation ids and tags from the path after it (`conversations_list`), the stream's too.
    "SCHEMA_PATH_PREFIX": "/api/v[0-9]+",
}

# Every line goes to the console (stderr), as text or JSON (chatsite/logging.py): tokens
# redacted, the request id of the request it was logged for, no message content unless
# CHAT_LOG_MESSAGE_CONTENT. The access log is `chatsite.access` (chatsite/accesslog.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "chatsite.logging.RedactTokensFilter"},
        "request_id": {"()": "chatsite.logging.RequestIdFilter"},
        "hide_message_content": {"()": "chatsite.logging.HideMessageContent"},
        "one_line_errors": {"()": "chatsite.logging.OneLineErrors"},
    },
    "formatters": {
        "text": {"()": "chatsite.logging.TextFormatter"},
        "json": {"()": "chatsite.logging.JsonLinesFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": log_format(),
            "filters": ["redact_tokens", "request_id", "hide_message_content"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "chatsite.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Without Django's own handlers (its DEFAULT_LOGGING prints django's lines a second
        # time, unformatted, while DEBUG is on): one line each, in the site's format. Its
        # level follows DJANGO_LOG_LEVEL, so DEBUG with DJANGO_DEBUG shows the SQL log.
        "django": {"handlers": [], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
        "django.channels.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "channels_redis.pubsub": {"filters": ["one_line_errors"]},
    },
}
