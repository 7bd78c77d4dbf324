# flowops — `make demo` runs the pipeline on generated data; `make test` runs the test suite.
# Both build .venv first when it is missing or older than pyproject.toml / constraints.txt.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARCHIVE := $(VENV)/share/flowops/spark-classes.jsa
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast bench cluster-test lint lock check-java clean

setup: check-java $(STAMP) $(ARCHIVE)

check-java:
	@scripts/check_java.sh

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "flowops needs Python 3.11 ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing flowops and its pinned dependencies into $(VENV) (first time: 3-4 minutes)"
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]' 2>&1 \
		| { grep -v "^WARNING: Location '.*' is ignored" || true; }
	@touch $(STAMP)

# The classes Spark loads, kept by the JVM as a class-data archive that every later embedded Spark maps: each start
# takes about 2-3 s and 4 CPU-s less. Without it everything still runs (and each start logs that there is none).
$(ARCHIVE): $(STAMP)
	@echo "writing the JVM class-data archive (about 30 s, once)"
	@$(BIN)/flowops jvm-archive >/dev/null || echo "no JVM class-data archive: each Spark start takes 2-3 s longer"

demo: setup
	$(BIN)/flowops demo

# Two pytest-xdist workers (each its own Spark): most of a test's time is Spark's fixed cost per query, which one
# driver spends on one core. Each test module stays on one worker, and the modules reading the shared demo lake on
# the same one (tests/conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: setup
	@scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

bench: setup
	$(BIN)/python -m tests.benchmarks.run

# The jobs of jobs/ with spark-submit and the wheel on a Spark standalone cluster (a master and 2 workers started from
# the pip-installed pyspark on 127.0.0.1), every table checked against the embedded run; stops every process it
# started. Not part of `make test`. ARGS: e.g. "--workers 1,2 --record" (BENCHMARKS.md), --rev HEAD, --keep (README).
cluster-test: setup
	$(BIN)/python -m tests.cluster.run $(ARGS)

lint: setup
	$(BIN)/ruff check lib tests jobs

# Re-resolve the pinned set from pyproject.toml in a scratch venv and write constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --disable-pip-version-check -q '.[dev]'
	.lock-venv/bin/pip freeze --exclude flowops | grep -v '^-e ' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) lakehouse demo mlruns.db spark-warehouse
