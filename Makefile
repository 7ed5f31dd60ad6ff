# Two commands matter: `make demo` (the retraining DAG end to end on the embedded local stack)
# and `make test` (the whole suite). Both create the virtual environment first if needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
UV_VERSION := 0.13.8

.PHONY: help venv browser demo test up down status lint format lock bench clean

help:
	@echo "make demo    run the retraining DAG once, end to end, on the embedded local stack"
	@echo "make test    install/update the environment and run the whole test suite"
	@echo "make up      start MongoDB wire server, S3 server and Airflow UI (http://127.0.0.1:8080)"
	@echo "make down    stop what 'make up' started"
	@echo "make lint    ruff check + format check;  make bench  run the benchmarks"

venv: $(STAMP)

# Re-installs whenever requirements.txt changes (the stamp carries its checksum).
$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(BIN)/python include/demo.py

# Headless Chromium + chromedriver (Debian packages) for tests/test_browser_ui.py; sudo unless root.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "installing chromium and chromium-driver for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

test: venv browser
	$(BIN)/python -m pytest

up: venv
	$(BIN)/python include/local_stack.py up

down:
	@test -x $(BIN)/python && $(BIN)/python include/local_stack.py down || true

status:
	$(BIN)/python include/local_stack.py status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pin every package from the top-level list in requirements.in.
lock: venv
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11

bench: venv
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean: down
	rm -rf .local
