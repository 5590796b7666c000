# Two commands do everything on a fresh machine:
#   make demo   - set up .venv, then the main job on the embedded default: push a CT, the bot merges,
#                 evaluates and publishes it (embedded hub, lab-size models)
#   make test   - set up .venv, then lint (ruff), format check, type check (mypy), the whole test suite
# .venv is installed exactly from requirements/lock.txt (uv, hashes checked); see requirements/README.md.
#   make test-latest - the newest versions pyproject.toml's ranges allow, in .venv-latest (finds breakage on purpose)
#   make lock        - re-resolve requirements/lock.txt (then run make test and commit it)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.10
UV := $(VENV)/uv/bin/uv
LOCK := requirements/lock.txt
TORCH := requirements/torch-cpu.txt
# Where the CPU torch wheel comes from: the find-links folder of this machine's pip configuration when
# there is one (never committed), else PyTorch's CPU index. Override: make setup TORCH_SOURCE='...'
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
TORCH_SOURCE ?= $(if $(strip $(FIND_LINKS)),$(foreach d,$(FIND_LINKS),--find-links $(d)),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
export UV_CACHE_DIR ?= $(HOME)/.cache/uv

.PHONY: demo test test-latest lint setup lock clean

$(UV):
	test -x $(BIN)/python || $(PY) -m venv --without-pip $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --target $(VENV)/uv uv==$(UV_VERSION)

$(BIN)/registry: pyproject.toml $(LOCK) | $(UV)
	@$(BIN)/python -c 'import sys, platform; ok = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"; ok or sys.exit("requirements/lock.txt is for CPython 3.11 on Linux x86_64; elsewhere: pip install -e .[test] (see requirements/README.md)")'
	$(UV) pip sync -q --python $(BIN)/python --require-hashes $(TORCH_SOURCE) $(LOCK)
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
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

# The newest releases the ranges in pyproject.toml allow (torch stays the CPU build): what a user who
# runs `pip install mergeling` gets today. Not the lock: run it on purpose, before `make lock`.
test-latest: | $(UV)
	test -x .venv-latest/bin/python || $(PY) -m venv --without-pip .venv-latest
	$(UV) pip install -q --python .venv-latest/bin/python --upgrade --resolution highest $(TORCH_SOURCE) -c $(TORCH) -e '.[test,ray]'
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

lock: | $(UV)
	$(UV) pip compile -q pyproject.toml --extra test --extra ray -c $(TORCH) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --custom-compile-command 'make lock' \
	  $(TORCH_SOURCE) -o $(LOCK)

clean:
	rm -rf $(VENV) .venv-latest .mergeling
