# The two commands for a fresh machine (see README):
#   make run    create .venv, install overspec, run the study on the embedded world
#   make test   create/update .venv, install with test extras, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test venv install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23" "setuptools>=68" wheel

venv: $(BIN)/python

install: venv
	$(BIN)/python -m pip install -e .

install-test: venv
	$(BIN)/python -m pip install -e '.[test]'

run: install
	$(BIN)/overspec run

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
