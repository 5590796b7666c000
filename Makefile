# Two commands do everything on a fresh machine:
#   make demo   - set up .venv, then the main job on the embedded default: push a CT, the bot merges,
#                 evaluates and publishes it (embedded hub, lab-size models, ~1.5 min the first time)
#   make test   - set up .venv, then lint (ruff), format check, type check (mypy), the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

$(BIN)/registry: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: the local CPU wheel; the project's range accepts it, so pip keeps it.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(BIN)/registry

setup: $(BIN)/registry

demo: setup
	$(BIN)/registry demo

# mypy: strict on registry/merge and registry/io, default elsewhere ([tool.mypy] in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .mergeling
