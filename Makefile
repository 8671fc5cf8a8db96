# The two commands for a fresh machine (see README):
#   make run    create .venv, install overspec, run the study on the embedded world
#   make test   create/update .venv, install with test extras, run the test suite
# Benchmarks: make bench (all of them, one goal table); make bench-peers creates .venv-peers, where the field's
# reference packages (benchmarks/peers/requirements.txt) and overspec.metrics import in one process.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
PEERS := .venv-peers

.PHONY: run test venv install install-test bench bench-peers clean

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

bench: install-test bench-peers
	$(BIN)/python benchmarks/run_all.py

# overspec goes in without its dependencies (torch, numpy 2): overspec.metrics needs only numpy and scipy.
$(PEERS)/installed: benchmarks/peers/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(PEERS) || python3 -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --upgrade "pip>=23" "setuptools>=68" wheel
	$(PEERS)/bin/python -m pip install -r benchmarks/peers/requirements.txt
	$(PEERS)/bin/python -m pip install --no-deps -e .
	$(PEERS)/bin/python -c "import bob.measure, pyeer.eer_stats, overspec.metrics"
	touch $@

bench-peers: $(PEERS)/installed
	@echo "peer environment ready: $(PEERS)/bin/python benchmarks/bench_scores.py (or make bench)"

clean:
	rm -rf $(VENV) $(PEERS) build dist src/*.egg-info .pytest_cache
