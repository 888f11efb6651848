# The README's two commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Embedded PostgreSQL and Redis under ./.forwardauth unless FORWARDAUTH_DATABASE_URL /
# FORWARDAUTH_REDIS_URL are set. Cookies are not Secure here because this serves plain http.
run: $(STAMP)
	$(BIN)/forwardauth migrate
	$(BIN)/forwardauth user demo
	FORWARDAUTH_COOKIE_SECURE=$${FORWARDAUTH_COOKIE_SECURE:-false} $(BIN)/forwardauth serve

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check forwardauth tests
	$(BIN)/mypy forwardauth

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
