# oxy — every target is a thin call of the CLI. `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
OXY     := $(BIN)/oxy
WAREHOUSE ?= warehouse
DEMO    ?= demo_data
export OXY_WAREHOUSE := $(WAREHOUSE)

.DEFAULT_GOAL := help
.PHONY: help install demo demo-data ingest score train forecast monitor report retrain test bench lint format clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/activate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(BIN)/activate

install: $(BIN)/activate  ## create .venv and install oxy with dev tools

demo-data: install  ## generate the demo exports into $(DEMO)/
	$(OXY) demo-data $(DEMO)

ingest: install  ## ingest every demo export into the warehouse
	@test -f $(DEMO)/sources.toml || $(MAKE) demo-data
	$(OXY) --config $(DEMO)/sources.toml ingest $(DEMO)

score: install  ## score every minute for anomalies (anomaly_scores, anomaly_events marts)
	$(OXY) score

train: install  ## train the global forecaster; promoted to production only if it beats it
	$(OXY) train

forecast: install  ## forecast every sensor one week ahead with the production model
	$(OXY) forecast

monitor: install  ## check recent data against the production baseline (exit 2 on alert)
	$(OXY) monitor

report: install  ## write the static HTML report into $(WAREHOUSE)/report/
	$(OXY) report

retrain: install  ## nightly loop: ingest what is new, score, train (promote if better), forecast
	$(MAKE) ingest score train forecast

$(VENV)/.bench: $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@# mlforecast's wheel ships a top-level `tests` package; it must not shadow anything of ours
	rm -rf $(VENV)/lib/python*/site-packages/tests
	@touch $@

bench: $(VENV)/.bench  ## run every benchmark in bench/ (installs pandas, psutil, mlforecast, statsforecast for the references)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

demo: install  ## the whole loop on fresh demo data: generate, ingest, score, train, forecast, monitor, report
	rm -rf $(DEMO) && $(MAKE) demo-data ingest score train forecast
	-$(OXY) monitor
	$(OXY) report

test: install  ## run the test suite
	$(BIN)/pytest

lint: install  ## ruff check + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install  ## apply ruff format and fixes
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:  ## remove the demo data and warehouse contents (keeps .venv)
	rm -rf $(DEMO) $(WAREHOUSE)/oxy.duckdb $(WAREHOUSE)/lake $(WAREHOUSE)/marts $(WAREHOUSE)/registry $(WAREHOUSE)/.staging
