# freight: the two set-up commands of the README are `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test docs dashboards proto bench bench-venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# An editable install leaves freight's own modules without bytecode, and with
# PYTHONDONTWRITEBYTECODE set every head, agent, worker and driver would compile them again at
# each start; compile them once, as `pip install .` does.
COMPILE := $(BIN)/python -m compileall -q runtime observe chaos tui

install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(COMPILE)

install-test: $(BIN)/python
	bash scripts/install-system-deps.sh
	$(BIN)/pip install -q -e '.[test]'
	$(COMPILE)

# Start a private local cluster, run the sample workload, print the status summary; on a
# terminal, then open the inspector on it (q quits and stops the cluster).
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

# Regenerate the Grafana dashboards' JSON and provisioning files in dashboards/.
dashboards: install-test
	$(BIN)/python dashboards/generate.py

proto: install-test
	$(BIN)/python scripts/gen_proto.py

# freight beside Ray and Dask, installed into their own virtualenv (Ray pins its own
# grpcio/protobuf) when missing. Prints one table; writes benchmarks/results/latest.{md,json}.
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--filter 'tasks' --passes 4".
BENCH_VENV ?= .bench-venv
BENCH_PACKAGES := 'ray==2.60.0' 'dask[distributed]' numpy psutil
BENCH_ARGS ?=
$(BENCH_VENV)/bin/python:
	$(PY) -m venv $(BENCH_VENV)

bench-venv: $(BENCH_VENV)/bin/python
	@$(BENCH_VENV)/bin/python -c "import ray, distributed, numpy, psutil; \
		assert ray.__version__ == '2.60.0'" 2>/dev/null \
		|| $(BENCH_VENV)/bin/pip install -q $(BENCH_PACKAGES)

bench: install bench-venv
	$(BIN)/python benchmarks/compare.py --ray-python $(BENCH_VENV)/bin/python \
		--dask-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

# freight top with 100,000 tasks and 1,000 actors: first rows, key-to-repaint latency, CPU.
# Options through BENCH_ARGS, e.g. make bench-top BENCH_ARGS="--tasks 5000 --presses 10".
bench-top: install-test
	$(BIN)/python benchmarks/bench_top.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
