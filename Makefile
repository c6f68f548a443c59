# GridTwin: the two commands are `make demo` and `make test`; each sets up everything it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GRIDTWIN := $(VENV)/bin/gridtwin
DEMO := data/demo/guilin_demo.gpkg
# the demo runs on its own build, made fresh at each start: a lived-in year leading up to the
# moment it starts (twin.demo), and live events that never change the committed GeoPackage
LIVE := var/demo-live.gpkg
PORT ?= 8501
# the demo listens on this machine only; `make demo HOST=0.0.0.0` to serve a network (mind the
# demo passwords). Set here, not with ?=: a HOST in the environment (zsh exports the machine's
# name as HOST) must not open the demo to the network; only the command line overrides it.
HOST = 127.0.0.1

.PHONY: demo live serve test bench venv data services lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "GridTwin needs Python 3.11+; set PYTHON=python3.11"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

$(DEMO): | $(VENV)/.installed
	$(GRIDTWIN) make-demo --store $(DEMO) --no-history

data: $(DEMO)

live: venv
	@mkdir -p $(dir $(LIVE))
	$(GRIDTWIN) make-demo --store $(LIVE) --force

## run the cockpit on the embedded demo community with live simulated feeds: http://localhost:8501
demo: venv live
	@echo "GridTwin: http://localhost:$(PORT) (demo users: docs/trust.md); feeds log: var/feeds.log"
	@$(GRIDTWIN) feeds --simulate --store $(LIVE) > var/feeds.log 2>&1 & feeds=$$!; \
	while :; do $(GRIDTWIN) supervise --store $(LIVE); sleep 600; done > var/supervise.log 2>&1 & \
	supervise=$$!; \
	trap 'kill $$feeds $$supervise 2>/dev/null' EXIT INT TERM; \
	TWIN_DATABASE_URL=$(abspath $(LIVE)) $(PY) -m ui.serve run app.py \
	  --server.port $(PORT) --server.address $(HOST) --server.headless true \
	  --browser.gatherUsageStats false

## serve the embedded demo over HTTP (OGC API Features): http://127.0.0.1:8090/ogc (docs/api.md)
## on a copy (var/serve-demo.gpkg: API keys and audit rows never touch the committed demo)
API_PORT ?= 8090
SERVE_STORE := var/serve-demo.gpkg
serve: venv data
	@mkdir -p var
	@test -f $(SERVE_STORE) || cp $(DEMO) $(SERVE_STORE)
	$(GRIDTWIN) serve --store $(SERVE_STORE) --host $(HOST) --port $(API_PORT)

## pass all the tests (installs and starts PostGIS, Mosquitto and Chromium as root where missing)
test: venv data
	@bash scripts/setup_services.sh
	$(PY) -m pytest -q -n 2 --dist loadfile

services:
	@bash scripts/setup_services.sh

bench: venv data
	@bash scripts/setup_services.sh
	$(PY) -m pip install --quiet -e '.[dev,bench]'  # the anchors (pygeoapi) of benchmarks/serve.py
	$(PY) -m benchmarks --quick --json benchmarks/out/results.json

lint: venv
	$(VENV)/bin/ruff check twin layers scripts ui app.py tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts var
