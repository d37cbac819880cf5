# Two commands on a fresh machine with Python 3.11: `make up` and `make test`.
# Both install uv (pinned) and the locked dependencies first; nothing else is needed.

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := UV_PYTHON_DOWNLOADS=never $(PYTHON) -m uv

.PHONY: install up test test-unit lock env-example

install:
	@$(PYTHON) -m uv --version 2>/dev/null | grep -q "uv $(UV_VERSION)" || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --python $(PYTHON)

up: install
	$(UV) run --frozen --no-sync amas up

test: install
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-zstd.sh
	$(UV) run --frozen --no-sync pytest --durations=30

test-unit: install
	$(UV) run --frozen --no-sync pytest -m unit

lock:
	$(UV) lock

env-example: install
	$(UV) run --frozen --no-sync python scripts/write_env_example.py
