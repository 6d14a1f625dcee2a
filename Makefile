# oxy — every target is a thin call of the CLI. `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
OXY     := $(BIN)/oxy
WAREHOUSE ?= warehouse
DEMO    ?= demo_data
export OXY_WAREHOUSE := $(WAREHOUSE)
IMAGE   ?= oxy:latest
BASE_IMAGE ?= python:3.11-slim

.DEFAULT_GOAL := help
.PHONY: help install browser demo demo-data ingest score train forecast monitor report retrain test bench lint format clean
.PHONY: wheelhouse image check-image

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/activate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cluster]'
	@touch $(BIN)/activate

install: $(BIN)/activate  ## create .venv and install oxy with dev tools and the cluster extra (Dask)

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
	$(BIN)/pip install --quiet -e '.[dev,cluster,bench]'
	@# PyHydroQC's metadata asks for the refused `sklearn` name: its real dependencies are in
	@# the bench extra (pyproject.toml), so it goes in alone
	$(BIN)/pip install --quiet --no-deps 'pyhydroqc==0.0.4'
	@# mlforecast's wheel ships a top-level `tests` package; it must not shadow anything of ours
	rm -rf $(VENV)/lib/python*/site-packages/tests
	@touch $@

bench: $(VENV)/.bench  ## run every benchmark in bench/ (installs the references and peers: pandas, psutil, mlforecast, ioos-qc, PyHydroQC)
	@for script in bench/bench_*.py bench/*_suite.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

demo: install  ## the whole loop on fresh demo data: generate, ingest, score, train, forecast, monitor, report
	rm -rf $(DEMO) && $(MAKE) demo-data ingest score train forecast
	-$(OXY) monitor
	$(OXY) report

test: install browser  ## run the test suite
	$(BIN)/pytest

# The report's browser test needs Chromium: Debian's package, installed where we may (root with
# apt: CI and these machines); elsewhere the test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      >/dev/null 2>&1 || echo "note: chromium did not install: the browser test will be skipped"; \
	  else echo "note: no chromium (needs root and apt): the browser test will be skipped"; fi; }

lint: install  ## ruff check + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install  ## apply ruff format and fixes
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

wheelhouse/.complete: pyproject.toml | $(BIN)/activate
	rm -rf wheelhouse
	$(BIN)/pip wheel --quiet --wheel-dir wheelhouse . hatchling
	rm -f wheelhouse/oxy-*.whl  # the image builds oxy's own wheel from the sources
	@touch $@

wheelhouse: wheelhouse/.complete  ## wheels of every dependency + the build backend, for an offline image build

image: wheelhouse/.complete  ## build the container image $(IMAGE) with docker, podman or buildah (BASE_IMAGE=...)
	@if docker info >/dev/null 2>&1; then build="docker build"; \
	elif command -v podman >/dev/null 2>&1; then build="podman build"; \
	elif command -v buildah >/dev/null 2>&1; then build="buildah bud --layers --isolation $${BUILDAH_ISOLATION:-chroot}"; \
	else echo "make image: no container builder: install docker (with a running engine), podman or buildah" >&2; \
	  command -v docker >/dev/null 2>&1 && echo "  (the docker client is here, but no engine answers: docker info failed)" >&2; \
	  exit 1; fi; \
	echo "$$build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) ."; \
	$$build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

check-image:  ## build a Debian base (debootstrap) and the image, run the whole loop inside it (root; not in make test)
	scripts/check-image

clean:  ## remove the demo data and warehouse contents (keeps .venv)
	rm -rf $(DEMO) $(WAREHOUSE)/oxy.duckdb $(WAREHOUSE)/lake $(WAREHOUSE)/marts $(WAREHOUSE)/registry $(WAREHOUSE)/.staging
