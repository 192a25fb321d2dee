# Two commands on a fresh machine: `make run` and `make test`. Everything else is built on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# tahoe-lafs lives in its own venv: its dependency pins must not meet ours.
TAHOE_VENV  := .venv-tahoe
TAHOE_STAMP := $(TAHOE_VENV)/.installed-stamp
TAHOE_PIN   := tahoe-lafs==1.20.0

.PHONY: run test soak bench lint clean syslog-ng nginx

run: $(STAMP) $(TAHOE_STAMP)
	$(BIN)/archiver serve -c config/dev.toml

test: $(STAMP) $(TAHOE_STAMP) syslog-ng lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m mypy archiver

soak: $(STAMP) $(TAHOE_STAMP)
	$(BIN)/python -m pytest -m soak

bench: $(STAMP) $(TAHOE_STAMP) nginx
	$(BIN)/python bench/ingest_http.py
	$(BIN)/python bench/scale_out.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/read.py
	$(BIN)/python bench/handlers.py
	$(BIN)/python bench/ingest_bulk.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/memory.py

# The venv is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "archiver needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# syslog-ng is a real client in the tests: Debian's packages, installed when missing.
syslog-ng:
	@if command -v syslog-ng >/dev/null 2>&1 && ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1; then :; else \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends syslog-ng-core syslog-ng-mod-http; \
	fi

# nginx answering a static 200 is a baseline in bench/ingest_http.py: Debian's package, installed
# when missing. `nginx` is the plain build (bookworm's nginx-light is it plus the echo module);
# nginx-light only where no nginx exists. A policy-rc.d that denies service starts is put in
# place for the install (and removed after it) when the machine has none, so the package's
# postinst does not start a system nginx on port 80: the bench starts its own.
nginx:
	@if command -v nginx >/dev/null 2>&1; then :; else \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq || exit 1; \
		PKG=$$(apt-cache policy nginx | grep -q 'Candidate: [0-9]' && echo nginx || echo nginx-light); \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d && trap '$$SUDO rm -f /usr/sbin/policy-rc.d' EXIT; \
		fi; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$PKG; \
	fi

$(TAHOE_STAMP):
	test -x $(TAHOE_VENV)/bin/python || $(PYTHON) -m venv $(TAHOE_VENV)
	$(TAHOE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TAHOE_VENV)/bin/python -m pip install --quiet '$(TAHOE_PIN)'
	touch $@

clean:
	rm -rf $(VENV) $(TAHOE_VENV) build *.egg-info .pytest_cache .hypothesis
