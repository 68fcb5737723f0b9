"""Secrets and HTTPS in the settings: a per-install key locally, a strong key and HTTPS only
in production, and Django's deployment checklist without a warning."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatsite.secret_key import install_secret_key
from tests.conftest import ROOT

# What a deployment sets besides its secret key (nothing here connects to the database or
# Redis).
DEPLOY_ENV = {
    "DJANGO_SETTINGS_MODULE": "chatsite.settings.production",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "postgres://chatsite@127.0.0.1:5432/chatsite",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def run_django(code: str, _unset: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`code` run after `django.setup()` in a fresh process with `env` over a clean
    environment (no DJANGO_* or CHAT_* of the test run, nor the variable `_unset`)."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CHAT_")) and k != _unset
    } | env
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup()\n{code}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run_django(
        f"from django.core.management import call_command\ncall_command(*{list(args)!r})", **env
    )


# --- local: this install's own key ------------------------------------------------


def test_local_settings_make_a_key_of_their_own_and_keep_it(tmp_path):
    """Without DJANGO_SECRET_KEY, local settings make a random key on first run, kept in an
    owner-only file; every later process of the install uses the same key."""
    key_file = tmp_path / "keys" / "secret-key"
    env = {
        "DJANGO_SETTINGS_MODULE": "chatsite.settings.local",
        "DJANGO_SECRET_KEY_FILE": str(key_file),
    }
    print_key = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_django(print_key, **env)
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50
    assert key != "django-insecure-local-development-only"  # the key the repository held
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = run_django(print_key, **env)
    assert second.stdout.strip() == key


def test_processes_starting_together_agree_on_one_key(tmp_path):
    """Racing first runs write one key file, whole, and all of them read that key."""
    path = tmp_path / "secret-key"
    keys: list[str] = []
    start = threading.Barrier(8)

    def first_run():
        start.wait()
        keys.append(install_secret_key(path))

    threads = [threading.Thread(target=first_run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8
    assert set(keys) == {path.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]  # no temporary files left


def test_an_empty_key_file_is_refused(tmp_path):
    """A key file that lost its key is an error, not an empty key."""
    path = tmp_path / "secret-key"
    path.write_text("\n")
    with pytest.raises(ImproperlyConfigured, match="empty"):
        install_secret_key(path)


# --- production: a strong key, HTTPS only --------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("bench", id="short"),
        pytest.param("x" * 49 + "y", id="few-distinct-characters"),
        pytest.param("django-insecure-" + secrets.token_urlsafe(50), id="insecure-prefix"),
    ],
)
def test_production_refuses_a_weak_secret_key(key):
    """Production settings refuse to load with a key under 50 characters (or one Django's
    deploy check calls insecure): such a key can be guessed, and it signs every token."""
    result = manage("check", DJANGO_SECRET_KEY=key, **DEPLOY_ENV)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be at least 50 random characters" in result.stderr


def test_production_passes_the_deployment_checklist():
    """`manage.py check --deploy --fail-level WARNING` passes with production settings and
    what a deployment sets (HTTPS redirect and HSTS are on by default)."""
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        **DEPLOY_ENV,
    )
    assert result.returncode == 0, result.stderr


def test_collectstatic_hashes_the_page_scripts_module_imports(tmp_path):
    """With production settings, collectstatic gives every static file a hashed name, and
    the page script's entry module imports the hashed copies of its modules (which import
    hashed copies in turn), so a cached old module is never mixed with a new one."""
    code = (
        "from django.core.management import call_command\n"
        "from django.test.utils import override_settings\n"
        f"with override_settings(STATIC_ROOT={str(tmp_path)!r}):\n"
        "    call_command('collectstatic', '--noinput', verbosity=0)\n"
    )
    result = run_django(code, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **DEPLOY_ENV)
    assert result.returncode == 0, result.stderr
    hashed = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]

    seen, pending = set(), ["chat/main.js"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        assert re.fullmatch(r"chat/[\w-]+\.[0-9a-f]{12}\.js", hashed[name]), hashed[name]
        source = (tmp_path / hashed[name]).read_text()
        imports = re.findall(r'^} from "\./([^"]+)";|^import .* from "\./([^"]+)";', source, re.M)
        for target in ["".join(match) for match in imports]:
            original = re.sub(r"\.[0-9a-f]{12}\.js$", ".js", target)
            assert target == hashed[f"chat/{original}"].removeprefix("chat/"), source
            pending.append(f"chat/{original}")
    # main.js reaches every module of the chat page's script (markdown.js is a classic
    # script; admin_*.js are the admin's).
    page_modules = {
        f"chat/{path.name}"
        for path in (ROOT / "static" / "chat").glob("*.js")
        if path.name != "markdown.js" and not path.name.startswith("admin")
    }
    assert seen == page_modules


def test_https_settings_follow_the_environment():
    """Each HTTPS setting can be changed by a deployment (e.g. a TLS proxy with another
    header, or HSTS off while trying HTTPS out); the defaults are all on."""
    code = (
        "from django.conf import settings as s\n"
        "print(repr((s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS,"
        " s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER)))"
    )
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}

    def https_settings(**changes: str):
        result = run_django(code, **env, **changes)
        assert result.returncode == 0, result.stderr
        return ast.literal_eval(result.stdout)

    assert https_settings() == (
        True,
        365 * 24 * 3600,
        True,
        True,
        ("HTTP_X_FORWARDED_PROTO", "https"),
    )
    assert https_settings(
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_HSTS_SECONDS="0",
        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        DJANGO_SECURE_HSTS_PRELOAD="0",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Scheme: https",
    ) == (False, 0, False, False, ("HTTP_X_FORWARDED_SCHEME", "https"))
    assert https_settings(DJANGO_SECURE_PROXY_SSL_HEADER="")[-1] is None
    bad = run_django(code, **env, DJANGO_SECURE_PROXY_SSL_HEADER="https")
    assert "must look like 'X-Forwarded-Proto: https'" in bad.stderr


def test_the_metrics_allow_list_is_read_from_the_environment_and_checked(monkeypatch):
    """Addresses and networks, comma-separated; anything else stops the process at start."""
    from django.core.exceptions import ImproperlyConfigured

    from chatsite.env import chat_settings_from_env

    monkeypatch.setenv("CHAT_METRICS_ALLOWED_IPS", "10.0.0.0/8, 192.168.1.7,::1")
    assert chat_settings_from_env()["CHAT_METRICS_ALLOWED_IPS"] == [
        "10.0.0.0/8",
        " 192.168.1.7",
        "::1",
    ]
    monkeypatch.setenv("CHAT_METRICS_ALLOWED_IPS", "10.0.0.0/8,prometheus.internal")
    with pytest.raises(ImproperlyConfigured, match=r"prometheus\.internal"):
        chat_settings_from_env()


# --- models ---------------------------------------------------------------------------


def test_the_models_offered_follow_the_api_key_and_the_environment():
    """With an API key Claude's models are offered (or the environment's `CHAT_MODELS`, as
    JSON); without one the demo model alone, whatever the environment lists; a malformed
    list fails the system check."""
    code = "from chat import catalog\nprint(catalog.offered_ids())"
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    own = json.dumps(
        [{"id": "claude-x", "label": "X", "context_tokens": 1000, "max_output_tokens": 100}]
    )

    def offered(**changes: str) -> list[str]:
        result = run_django(code, **env, **changes)
        assert result.returncode == 0, result.stderr
        return ast.literal_eval(result.stdout)

    assert offered() == ["demo"]
    assert offered(CHAT_MODELS=own) == ["demo"]
    assert offered(ANTHROPIC_API_KEY="k")[0] == "claude-sonnet-4-5"
    assert offered(ANTHROPIC_API_KEY="k", CHAT_MODELS=own) == ["claude-x"]
    bad = manage("check", **env, ANTHROPIC_API_KEY="k", CHAT_MODELS='[{"id": "x"}]')
    assert bad.returncode != 0
    assert "chat.E001" in bad.stderr


# --- production: what a deployment must say ------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"],
)
@pytest.mark.parametrize("absence", ["unset", "empty"])
def test_production_refuses_to_start_without_each_deployment_variable(name, absence):
    """Production settings stop at start, naming the variable, when a deployment leaves out
    its secret key, its host names, its database or its Redis (set to nothing, or not at
    all), instead of a site that starts and fails later."""
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    if absence == "unset":
        del env[name]
        os_environ_without = name
    else:
        env[name] = ""
        os_environ_without = None
    result = run_django("", _unset=os_environ_without, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


def test_production_refuses_sqlite_and_a_missing_redis_unless_the_site_is_one_process():
    """Several processes cannot share SQLite, and without Redis each stream would hear only
    its own process's answers: both are refused, unless CHAT_SINGLE_PROCESS says the site is
    one process (the benchmark's single-process setup)."""
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    sqlite = {**env, "DATABASE_URL": "sqlite:////tmp/chatsite-never-created.sqlite3"}
    refused = run_django("", **sqlite)
    assert refused.returncode != 0
    assert "DATABASE_URL must be PostgreSQL" in refused.stderr

    show = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'])"
    alone = run_django(show, **(sqlite | {"CHAT_SINGLE_PROCESS": "1", "REDIS_URL": ""}))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == "django.db.backends.sqlite3"


def test_production_trusts_its_own_host_names_over_https_for_csrf():
    """CSRF trusted origins are the allowed hosts over HTTPS (a leading-dot host is its
    subdomains), unless DJANGO_CSRF_TRUSTED_ORIGINS names them; X-Forwarded-Host is not
    read (the proxy sets Host)."""
    code = (
        "from django.conf import settings as s\n"
        "print(repr((s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS, s.USE_X_FORWARDED_HOST)))"
    )
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}

    def hosts_and_origins(**changes: str):
        result = run_django(code, **(env | changes))
        assert result.returncode == 0, result.stderr
        return ast.literal_eval(result.stdout)

    assert hosts_and_origins(DJANGO_ALLOWED_HOSTS="chat.example.com,.example.org") == (
        ["chat.example.com", ".example.org"],
        ["https://chat.example.com", "https://*.example.org"],
        False,
    )
    assert hosts_and_origins(DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.net")[1] == [
        "https://chat.example.net"
    ]


def test_static_root_follows_the_environment(tmp_path):
    """DJANGO_STATIC_ROOT is where collectstatic writes (a deployment's code directory may
    be read-only); by default, staticfiles/ in the project."""
    code = "from django.conf import settings as s; print(s.STATIC_ROOT)"
    env = {**DEPLOY_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    assert run_django(code, **env).stdout.strip() == str(ROOT / "staticfiles")
    moved = run_django(code, **env, DJANGO_STATIC_ROOT=str(tmp_path / "static"))
    assert moved.stdout.strip() == str(tmp_path / "static")
