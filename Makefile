# Two commands on a fresh machine: `make run` and `make test`. Everything else is built on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# tahoe-lafs lives in its own venv: its dependency pins must not meet ours.
TAHOE_VENV  := .venv-tahoe
TAHOE_STAMP := $(TAHOE_VENV)/.installed-stamp
TAHOE_PIN   := tahoe-lafs==1.20.0
# rsyslog for the tests, unpacked (below).
RSYSLOGD    := .cache/rsyslog/usr/sbin/rsyslogd

# Test files run TEST_JOBS at a time, each file whole in one process (its module fixtures and its
# order kept): most tests wait on sinks, grids and daemons rather than on the CPU.
TEST_JOBS ?= 2

.PHONY: run test soak bench lint clean system-deps docker-images docker-push docker-test fresh-test

run: $(STAMP) $(TAHOE_STAMP)
	$(BIN)/archiver serve -c config/dev.toml

test: $(STAMP) $(TAHOE_STAMP) lint $(RSYSLOGD)
	@$(MAKE) --no-print-directory system-deps TARGET=test
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(BIN)/python -m mypy archiver

soak: $(STAMP) $(TAHOE_STAMP)
	$(BIN)/python -m pytest -m soak

bench: $(STAMP) $(TAHOE_STAMP)
	@$(MAKE) --no-print-directory system-deps TARGET=bench
	$(BIN)/python bench/ingest_http.py
	$(BIN)/python bench/scale_out.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/read.py
	$(BIN)/python bench/handlers.py
	$(BIN)/python bench/ingest_bulk.py
	$(BIN)/python bench/rules_cost.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/longterm.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/seal.py

# Container images (docs/docker.md), built from wheels made here: BASE=archiver-base:bookworm
# (`$(BIN)/python docker/images.py base`) where no image registry is reachable.
TAG ?= latest
docker-images: $(STAMP)
	@$(MAKE) --no-print-directory system-deps TARGET=build
	@$(MAKE) --no-print-directory system-deps TARGET=docker
	$(BIN)/python docker/images.py build $(if $(BASE),--base $(BASE)) --tag $(TAG)

docker-push: $(STAMP)
	@test -n "$(REGISTRY)" || { echo "usage: make docker-push REGISTRY=host:port [TAG=latest]"; exit 2; }
	@$(MAKE) --no-print-directory system-deps TARGET=docker
	$(BIN)/python docker/images.py push $(REGISTRY) --tag $(TAG)

# The stack of docker/compose.yaml end to end, with a Docker daemon started here if none runs.
docker-test: $(STAMP)
	@$(MAKE) --no-print-directory system-deps TARGET=build
	@$(MAKE) --no-print-directory system-deps TARGET=docker
	$(BIN)/python docker/test_stack.py

# The venv is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "archiver needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The Debian packages of system-packages.txt that TARGET needs, installed when missing. A
# policy-rc.d that denies service starts is put in place for the install (and removed after
# it) when the machine has none, so no package's postinst starts a system daemon (nginx on
# port 80, syslog-ng): the tests and benchmarks start their own.
TARGET ?= test
system-deps:
	@missing=$$(awk -v t=$(TARGET) '!/^#/ && NF >= 2 && index(","$$2",", ","t",") {print $$1}' system-packages.txt | \
		while read -r pkg; do dpkg-query -W -f='$${Status}\n' "$$pkg" 2>/dev/null | grep -q 'ok installed' || echo "$$pkg"; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing system packages for $(TARGET): $$missing"; \
		$$SUDO apt-get update -qq || exit 1; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d && trap '$$SUDO rm -f /usr/sbin/policy-rc.d' EXIT; \
		fi; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Debian's rsyslog and syslog-ng conflict (each is the system's log daemon) and the tests drive
# both: rsyslogd runs from its package unpacked into .cache/rsyslog, never installed (its
# libraries are in system-packages.txt), so no install removes syslog-ng or starts a daemon.
$(RSYSLOGD):
	@$(MAKE) --no-print-directory system-deps TARGET=test
	rm -rf .cache/rsyslog .cache/rsyslog-deb && mkdir -p .cache/rsyslog-deb
	cd .cache/rsyslog-deb && { apt-get download rsyslog 2>/dev/null || \
		{ $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq && apt-get download rsyslog; }; }
	dpkg-deb -x .cache/rsyslog-deb/rsyslog_*.deb .cache/rsyslog
	rm -rf .cache/rsyslog-deb
	touch $@

# Python 3.13 removed the cgi module, which tahoe-lafs 1.20.0 still imports: legacy-cgi is
# the same module, published for 3.13 and later (docs/tahoe.md).
define tahoe_venv
	@$(MAKE) --no-print-directory system-deps TARGET=build
	test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet '$(TAHOE_PIN)'
	$(1)/bin/python -c 'import cgi' 2>/dev/null || $(1)/bin/python -m pip install --quiet legacy-cgi
	touch $(1)/.installed-stamp
endef

$(TAHOE_STAMP):
	$(call tahoe_venv,$(TAHOE_VENV),$(PYTHON))

# Whichever of Python 3.11, 3.12 and 3.13 `python3` is, the grid must start and archiver's unit
# tier pass: CI proves 3.12 and 3.13 beside the default by building a Tahoe venv with each and
# starting a one-node grid that answers its web API (tahoe-check-3.12, tahoe-check-3.13), and by
# running the unit tier on each, with TahoeFS's pyFilesystem2 conformance cases on a grid of
# that Python (test-3.12, test-3.13).
# pyenv's 3.X when pyenv has one (its python3.X shim only works once selected), else PATH's.
python_of = $(shell v=$$(pyenv versions --bare 2>/dev/null | grep '^$(1)\.' | tail -1); \
	if [ -n "$$v" ]; then echo "$$(pyenv prefix $$v)/bin/python3"; else command -v python$(1) || echo python$(1); fi)
UNIT_TESTS := tests/test_architecture.py tests/test_config.py tests/test_decoder.py tests/test_records.py \
	tests/test_records_property.py tests/test_redact.py tests/test_segments.py tests/test_stop_seal.py \
	tests/test_uploader.py tests/test_heap.py tests/test_client_fields.py tests/test_rules.py \
	tests/test_redactor.py tests/test_search_index.py tests/test_quiet_imports.py \
	tests/tahoe/test_conformance.py

# Kept once built: make would otherwise delete a pattern rule's stamp as an intermediate file.
.PRECIOUS: .venv-tahoe-3.%/.installed-stamp
.venv-tahoe-3.%/.installed-stamp:
	$(call tahoe_venv,.venv-tahoe-3.$*,$(call python_of,3.$*))

tahoe-check-3.%: $(STAMP) .venv-tahoe-3.%/.installed-stamp
	ARCHIVER_TAHOE=.venv-tahoe-3.$*/bin/tahoe $(BIN)/python tests/tahoe/grid_smoke.py

test-3.%: .venv-tahoe-3.%/.installed-stamp
	test -x .venv-3.$*/bin/python || $(call python_of,3.$*) -m venv .venv-3.$*
	.venv-3.$*/bin/python -m pip install --quiet --upgrade pip
	.venv-3.$*/bin/python -m pip install --quiet -e '.[test]'
	ARCHIVER_TAHOE=.venv-tahoe-3.$*/bin/tahoe .venv-3.$*/bin/python -m pytest -q $(UNIT_TESTS)

# `make test` and a `make run` smoke test under chroot in a throwaway copy of a minimal Debian
# root (cached in .cache/fresh-root): whatever a new machine lacks, and these files do not
# install, fails there (README, "Development: a new machine").
fresh-test:
	@$(MAKE) --no-print-directory system-deps TARGET=fresh
	tools/fresh-test.sh

clean:
	rm -rf $(VENV) $(TAHOE_VENV) .venv-3.* .venv-tahoe-3.* build *.egg-info .pytest_cache .hypothesis
