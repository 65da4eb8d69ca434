# The README's commands. Each target bootstraps what it needs (idempotent).
PY := .venv/bin/python
MANAGE := $(PY) manage.py
export DJANGO_SETTINGS_MODULE := billing_site.settings

.PHONY: run test services lint format bench fault clean-data

services:
	@deploy/bootstrap.sh

run: services
	@$(MANAGE) migrate --no-input -v 0
	@$(MANAGE) collectstatic --no-input -v 0
	@$(MANAGE) seed_demo
	@$(PY) deploy/run.py

test:
	@deploy/bootstrap.sh --with-test-tools
	@$(MAKE) --no-print-directory lint
	@$(MANAGE) makemigrations --check --dry-run -v 1
	@DJANGO_ALLOW_ASYNC_UNSAFE=true .venv/bin/pytest $(PYTEST_ARGS)

lint:
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check --quiet . || (echo "run 'make format'"; exit 1)

format:
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

bench: services
	@$(MANAGE) migrate --no-input -v 0
	@$(MANAGE) bench $(or $(NAME),billing_run) --json

fault: services
	@.venv/bin/pytest tests/fault -q -s

clean-data:
	@echo "This stops this checkout's private servers and deletes .data/ (databases, mail, PDFs)."; \
	read -p "Type yes to continue: " ok && [ "$$ok" = yes ] && \
	{ [ ! -x $(PY) ] || $(PY) deploy/services.py --stop; } && rm -rf .data .env
