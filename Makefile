# floodgate — every target installs what it needs itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export FLOODGATE_HOME ?= $(CURDIR)/.floodgate
# Dagster hands asset events to the event log in batches (orchestration/event_log.py)
export DAGSTER_EVENT_BATCH_SIZE ?= 1000

# The BigQuery emulator (local-bigquery) needs Python 3.13: it gets a virtual environment
# of its own, used only by the tests that start it (local_services/bigquery_emulator.py).
PYTHON_EMULATOR ?= $(firstword $(wildcard $(shell pyenv prefix 3.13 2>/dev/null)/bin/python3.13) python3.13)
EMULATOR_VENV := .venv-bigquery
EMULATOR_STAMP := $(EMULATOR_VENV)/.installed

.PHONY: install bigquery-emulator demo dev test bench clean

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	@command -v cc >/dev/null || command -v gcc >/dev/null || { echo "needs a C compiler (apt-get install gcc) for its C helpers (the JSON record scanner, the row fingerprints)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "from engine.search_terms.record_scanner import build_library; print('record scanner:', build_library())"
	$(PY) -c "from engine.catalog.row_fingerprints import build_library; print('row fingerprints:', build_library())"
	touch $(STAMP)

install: $(STAMP)

$(EMULATOR_STAMP): requirements-bigquery-emulator.lock local_services/emulator_extensions.py
	@command -v $(PYTHON_EMULATOR) >/dev/null || { echo "the BigQuery emulator needs Python 3.13 (make PYTHON_EMULATOR=/path/to/python3.13)"; exit 1; }
	$(PYTHON_EMULATOR) -m venv $(EMULATOR_VENV)
	$(EMULATOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EMULATOR_VENV)/bin/python -m pip install --quiet -r requirements-bigquery-emulator.lock
	$(EMULATOR_VENV)/bin/python local_services/emulator_extensions.py $(CURDIR)/$(EMULATOR_VENV)/home
	touch $(EMULATOR_STAMP)

bigquery-emulator: $(EMULATOR_STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m orchestration.demo

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

test: install $(EMULATOR_STAMP)
	$(PY) -m pytest

bench: install
	$(PY) -m bench.search_terms
	$(PY) -m bench.s3_read
	$(PY) -m bench.books
	$(PY) -m bench.catalog
	$(PY) -m bench.enrichment

clean:
	rm -rf $(VENV) $(EMULATOR_VENV) .dagster_home .floodgate .bench .pytest_cache .hypothesis
