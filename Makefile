# The two commands a newcomer needs:
#   make run    install the runtime dependencies, migrate, create the demo login, serve on
#               http://$(HOST):$(PORT) (127.0.0.1:8000 unless given: make run PORT=8001 HOST=0.0.0.0)
#   make test   install the test set, check the production settings, start PostgreSQL/Redis/
#               Chromium if missing, lint (and check uv.lock is current), run every test
# and one for whoever changes a dependency in pyproject.toml:
#   make lock   re-resolve uv.lock (existing pins kept where they still fit); commit it
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# uv installs from uv.lock (every version and hash pinned) in seconds where pip takes
# minutes; it is bootstrapped into the venv with the venv's own pip, so nothing but
# python3 is needed first. Bump the version here (the stamp below reinstalls it).
UV_VERSION := 0.13.9
HOST ?= 127.0.0.1
PORT ?= 8000

# uv finds the project from here and installs into $(VENV), never a Python of its own.
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
# --locked: install exactly what uv.lock says, and refuse (rather than re-resolve) when
# pyproject.toml asks for something the lock does not have.
SYNC := $(UV_ENV) $(UV) sync --locked --quiet
LOCK_STALE := uv.lock is out of date with pyproject.toml: run 'make lock' and commit uv.lock
# The lock's requirements against pyproject.toml's, offline: a current lock passes in
# milliseconds without the network; any change to a dependency fails.
LOCK_CHECK := $(UV_ENV) $(UV) lock --check --offline --quiet 2>/dev/null || { echo "$(LOCK_STALE)" >&2; exit 1; }

.PHONY: run test install install-bench lint lock lock-check check-deploy bench

# One stamp per installed set, newer than pyproject.toml and uv.lock once that set is in:
# a second `make run` goes straight to the server, and switching between run and test
# installs nothing unless a dependency changed (the test set holds the runtime set, so
# installing it stamps both). tests/test_install.py holds this.
$(VENV)/.uv-$(UV_VERSION):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

# The runtime set only (no test extra: no Playwright, pytest, ruff...). --inexact leaves
# whatever `make test` or `make bench` added in place.
$(VENV)/.installed-run: pyproject.toml uv.lock | $(VENV)/.uv-$(UV_VERSION)
	@$(LOCK_CHECK)
	$(SYNC) --inexact
	touch $@

# The runtime set and the test extra, exactly as CI has them (a package the lock no longer
# lists is removed, so a stale import fails here as it would in CI).
$(VENV)/.installed-test: pyproject.toml uv.lock | $(VENV)/.uv-$(UV_VERSION)
	@$(LOCK_CHECK)
	$(SYNC) --extra test
	touch $@ $(VENV)/.installed-run

# The test set plus the benchmark's own packages (bench/README.md).
$(VENV)/.installed-bench: pyproject.toml uv.lock | $(VENV)/.uv-$(UV_VERSION)
	@$(LOCK_CHECK)
	$(SYNC) --inexact --extra test --extra bench
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

install: $(VENV)/.installed-test

install-bench: $(VENV)/.installed-bench

run: $(VENV)/.installed-run
	$(PY) manage.py ensure_demo_user --migrate
	@# The banner prints once the port is bound (chatsite/server.py), not before.
	CHATSITE_BANNER="chatsite: open http://{host}:{port}/ and log in as demo / demo" \
	$(PY) -m chatsite.server -b $(HOST) -p $(PORT) chatsite.asgi:application

lock: $(VENV)/.uv-$(UV_VERSION)
	$(UV_ENV) $(UV) lock $(LOCK_ARGS)

lock-check: $(VENV)/.uv-$(UV_VERSION)
	@$(LOCK_CHECK)

lint: $(VENV)/.installed-test lock-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Django's deployment checklist on the production settings, with what a deployment sets
# (a fresh random secret key, its host name, PostgreSQL and Redis; the check connects to
# neither): any warning fails.
check-deploy: $(VENV)/.installed-test
	DJANGO_SETTINGS_MODULE=chatsite.settings.production \
	DJANGO_SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	DJANGO_ALLOWED_HOSTS=chat.example.com \
	DATABASE_URL=postgres://chatsite@127.0.0.1:5432/chatsite \
	REDIS_URL=redis://127.0.0.1:6379/0 \
	$(PY) manage.py check --deploy --fail-level WARNING

test: $(VENV)/.installed-test check-deploy lint
	bash .ci/ensure-services
	$(PY) -m pytest

bench: $(VENV)/.installed-bench
	$(PY) -m bench.run $(BENCH_ARGS)
