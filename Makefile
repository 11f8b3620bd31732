# floodgate — every target installs what it needs itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export FLOODGATE_HOME ?= $(CURDIR)/.floodgate

.PHONY: install demo dev test bench clean

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	@command -v cc >/dev/null || command -v gcc >/dev/null || { echo "needs a C compiler (apt-get install gcc) for the JSON record scanner"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "from engine.search_terms.record_scanner import build_library; print('record scanner:', build_library())"
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m orchestration.demo

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m bench.search_terms

clean:
	rm -rf $(VENV) .dagster_home .floodgate .bench .pytest_cache .hypothesis
