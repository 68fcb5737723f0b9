# The two commands a newcomer needs:
#   make run    install, migrate, create the demo login, serve on http://127.0.0.1:8000
#   make test   install, check the production settings, start PostgreSQL/Redis/Chromium if
#               missing, lint, run every test
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install lint check-deploy bench

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"

run: install
	$(PY) manage.py migrate --no-input
	$(PY) manage.py ensure_demo_user
	@# The banner prints once the port is bound (chatsite/server.py), not before.
	CHATSITE_BANNER="chatsite: open http://{host}:{port}/ and log in as demo / demo" \
	$(PY) -m chatsite.server -b $(HOST) -p $(PORT) chatsite.asgi:application

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Django's deployment checklist on the production settings, with what a deployment sets
# (a fresh random secret key, its host name): any warning fails.
check-deploy: install
	DJANGO_SETTINGS_MODULE=chatsite.settings.production \
	DJANGO_SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	DJANGO_ALLOWED_HOSTS=chat.example.com \
	$(PY) manage.py check --deploy --fail-level WARNING

test: install check-deploy
	bash .ci/ensure-services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m bench.run $(BENCH_ARGS)
