# streamrelay: `make run` starts the backend and the proxy on 127.0.0.1;
# `make test` runs the whole suite. Both install into .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRIAL_ARGS ?= tests
BACKEND_LISTEN ?= tcp:8081:interface=127.0.0.1
PROXY_LISTEN ?= tcp:8080:interface=127.0.0.1

CHAOS_ARGS ?= --seconds 60

.PHONY: install run test lint unit bench chaos clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "streamrelay needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]' --config-settings editable_mode=compat
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

run: install
	@mkdir -p uploads
	@echo "streamrelay: backend on $(BACKEND_LISTEN), proxy on $(PROXY_LISTEN); Ctrl-C stops both"
	@trap 'kill $$backend $$proxy 2>/dev/null; wait' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/twistd -n --pidfile= --logfile=- streamrelay-backend --listen $(BACKEND_LISTEN) --storage uploads & backend=$$!; \
	$(BIN)/twistd -n --pidfile= --logfile=- streamrelay-proxy --listen $(PROXY_LISTEN) --backend http://$$(echo $(BACKEND_LISTEN) | sed -E 's/^tcp:([0-9]+):interface=(.*)$$/\2:\1/') & proxy=$$!; \
	while kill -0 $$backend 2>/dev/null && kill -0 $$proxy 2>/dev/null; do sleep 1; done; \
	echo "streamrelay: a service stopped (see its log above); stopping the other" >&2; exit 1

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Test files (some of 1 GiB) and the programs' logs are kept only when a test fails.
test: lint
	@dir=$${TMPDIR:-/tmp}/streamrelay-trial-$$$$; \
	if $(BIN)/trial --temp-directory=$$dir $(TRIAL_ARGS); then rm -rf $$dir; \
	else echo "test files and program logs kept in $$dir (logs/)"; exit 1; fi

bench: install
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

chaos: install
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache _trial_temp*
