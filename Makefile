PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The database `make test-postgres` runs the suite on (pytest-django creates test_iotadmin).
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/iotadmin

.PHONY: run test test-postgres lint check-deploy bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# localhub and the web app at http://127.0.0.1:8000 (see iotadmin/run.py); Ctrl-C stops both.
run: $(STAMP)
	$(PY) -m iotadmin.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

# Django's deployment checks, with the settings a production environment gets (warnings fail).
check-deploy: $(STAMP)
	DEBUG=False SECRET_KEY=check-deploy-only-never-a-real-key-0123456789abcdefghij \
	REDIS_URL=redis://127.0.0.1:6379/0 ALLOWED_HOSTS=iotadmin.example.com SECURE_COOKIES=True \
	$(PY) manage.py check --deploy --fail-level WARNING

test: lint
	$(PY) -m pytest

test-postgres: $(STAMP)
	DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/localhub_twin.py
	$(PY) bench/dashboard_list.py
	$(PY) bench/event_latency.py
	$(PY) bench/connection_flood.py
	$(PY) bench/login_flood.py

clean:
	rm -rf $(VENV) var
