# freight: the two set-up commands of the README are `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test docs proto bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	bash scripts/install-system-deps.sh
	$(BIN)/pip install -q -e '.[test]'

# Start a private local cluster, run the sample workload, print the status summary.
run: install
	$(BIN)/freight demo

# Everything the tests need, then lint and the whole suite.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

docs: install
	$(BIN)/python scripts/gen_docs.py

proto: install-test
	$(BIN)/python scripts/gen_proto.py

# freight beside Ray (installed into its own virtualenv: Ray pins its own grpcio/protobuf).
BENCH_VENV ?= .bench-venv
$(BENCH_VENV)/bin/python:
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q 'ray==2.60.0' numpy

bench: install-test $(BENCH_VENV)/bin/python
	$(BIN)/python benchmarks/compare.py --ray-python $(BENCH_VENV)/bin/python --json benchmarks/results/latest.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
