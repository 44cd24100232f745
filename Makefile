# Two commands set up everything on a fresh machine:
#   make run    create .venv, install, run the whole pipeline on the bundled sample
#   make test   create .venv if missing, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)

.PHONY: run test env check-java bench clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d); set PYTHON=python3.11" % sys.version_info[:2])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

check-java: $(STAMP)
	@$(BIN)/python -c 'from jobs.common.spark import check_java; check_java()' || \
	  (echo "Spark needs Java 17 or newer: install OpenJDK 17 (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME" >&2; exit 1)

run: check-java
	$(BIN)/sidpipe run --root out

# Two pytest workers (pytest-xdist), a test file per worker at a time so module fixtures run once,
# longest files first (tests/conftest.py orders them).
# About 15 min on a 2-core machine (the suite is CPU-bound); more cores help.
TEST_WORKERS ?= 2

test: check-java
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

bench: check-java
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf out spark-warehouse metastore_db derby.log
