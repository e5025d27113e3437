# airflow-mlops: every set-up step behind two commands, `make demo` and `make test`.
# Needs only Python 3.11 on the machine. uv comes from the lock file into .venv itself, so `make install`
# works whether or not a virtual environment is active and whether or not uv is installed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Never let uv download an interpreter: use the machine's Python 3.11.
export UV_PYTHON_DOWNLOADS := never
UV     := $(BIN)/python -m uv
UV_PIN := $(shell sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)

.PHONY: help install demo up test test-examples test-faults test-unit test-dags test-integration bench lint format lock stop clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Bytecode is compiled at install: every Airflow task is a fresh interpreter, and machines that set
# PYTHONDONTWRITEBYTECODE would otherwise compile pandas, Feast, MLflow... from source in each one.
install:  ## build .venv from requirements.lock and install the project (editable)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(UV) --version >/dev/null 2>&1 || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_PIN)"; }
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --editable .
	$(UV) pip check --python $(BIN)/python

demo: install  ## the whole loop: history Jan-Mar 2013, champion, deploy, summer traffic, drift, retraining
	$(BIN)/airflow-mlops demo --model flight_delay

up: install  ## start what is not running: the database, Airflow, each model's @champion endpoint
	$(BIN)/airflow-mlops up

#: The end-to-end loops `make test` leaves to `make test-examples` (pyproject's testpaths runs tests/e2e/test_loop.py).
EXAMPLE_LOOPS = tests/e2e/test_loop_electricity.py tests/e2e/test_bring_your_own.py

test: install  ## unit, DAG, integration (real servers) and the flights loop end to end
	$(BIN)/pytest

test-examples: install  ## the loops of the second example and of the bring-your-own page, end to end through Airflow
	$(BIN)/pytest $(EXAMPLE_LOOPS)

test-faults: install  ## the fault suite: processes killed, disks full, servers down; writes docs/reliability.md's table
	MLOPS_FAULTS_REPORT=docs/reliability.md $(BIN)/pytest tests/faults

test-unit: install
	$(BIN)/pytest tests/unit

test-dags: install
	$(BIN)/pytest tests/dags

test-integration: install
	$(BIN)/pytest tests/integration

bench: install  ## benchmarks; figures go to BENCHMARKS.md
	$(BIN)/python -m tests.benchmarks.run

lint: install  ## ruff (Airflow AIR rules included) and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: install  ## re-pin requirements.lock from pyproject.toml (names, versions, hashes; no URLs)
	$(UV) pip compile pyproject.toml --group dev --python-version 3.11 --generate-hashes --no-header \
		--quiet -o requirements.lock

stop:  ## stop everything `make demo` or `make up` started: endpoints, Airflow, MLflow, then the database
	-test ! -x $(BIN)/airflow-mlops || $(BIN)/airflow-mlops down

clean: stop  ## remove the state folder (.mlops/, the embedded database included): a full reset
	rm -rf .mlops
