# `make run` trains the main job offline; `make test` runs the test suite; `make mutate` runs
# the mutation tests of the core modules (slow, not part of `make test`).
# Each target creates .venv (with the project installed) when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxreg-installed

.PHONY: run test lint bench mutate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m jaxreg run main

# Tests run in up to 4 worker processes (pytest-xdist), one test file per worker at a time
# (module fixtures run once): XLA compilation dominates and is mostly single-threaded.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# One style (ruff format + lint, settings in pyproject.toml); CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/train_loop.py

# Plants one small bug at a time in the core modules and runs the tests mapped to each
# (tools/mutate.py): report in benchmarks/results/mutation.md, outcomes cached in .mutate/.
# A subset: `make mutate MODULES="jaxreg/augment/mix.py jaxreg/optim/"` (`path:N`: a random N
# of its mutants, an estimate); MUTATE_JOBS=2 runs two mutants at once.
MODULES ?=
MUTATE_JOBS ?= 1
mutate: $(STAMP)
	$(PY) tools/mutate.py --jobs $(MUTATE_JOBS) $(MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .mutate
