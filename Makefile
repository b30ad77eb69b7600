# dp2bridge: two commands set everything up.
#   make run    create .venv, install, make the demo home ./var once, serve it
#   make test   install the test tools, then run every test
# PostgreSQL tests run when DP2BRIDGE_TEST_POSTGRES is set (see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
HOME_DIR ?= ./var
PY := $(VENV)/bin/python
DP2BRIDGE := $(VENV)/bin/dp2bridge
PIP := $(PY) -m pip --disable-pip-version-check -q
# Stamps: pip runs again only when pyproject.toml changed (the package is installed editable,
# so code changes need no reinstall).
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
PYTEST_TIMEOUT ?= 600
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help run test bench clean system-deps

help:
	@echo "make run     create .venv, install, init $(HOME_DIR) with the demo (first time only), serve it"
	@echo "make test    install test extras, then run the tests (PostgreSQL too with DP2BRIDGE_TEST_POSTGRES=1)"
	@echo "make bench   run the submission benchmark (bench/submit.py; BENCH_ARGS=... for options)"
	@echo "make clean   remove .venv and caches (never $(HOME_DIR): delete that yourself to start over)"

$(PY):
	@if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi; \
	echo "creating $(VENV) with $$py"; \
	$$py -m venv $(VENV) || { echo "could not create $(VENV): install Python 3.11 with venv" \
	  "(Debian: apt-get install python3-venv)" >&2; exit 1; }

$(STAMP_RUN): pyproject.toml | $(PY)
	@echo "installing dp2bridge into $(VENV)"
	@$(PIP) install -e .
	@touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	@echo "installing dp2bridge with its test extras into $(VENV)"
	@$(PIP) install -e '.[test]'
	@touch $@ $(STAMP_RUN)

# The demo home is made once; a later `make run` serves the same ./var (its accounts,
# passwords and mail stay).  `init` prints the demo passwords, once.
$(HOME_DIR)/bridge.toml: | $(STAMP_RUN)
	$(DP2BRIDGE) init --home $(HOME_DIR) --demo

run: $(STAMP_RUN) $(HOME_DIR)/bridge.toml
	$(DP2BRIDGE) serve --config $(HOME_DIR)/bridge.toml

# openssl is used by the certificate tests; systemd-analyze (package systemd) is optional:
# the unit-file test that needs it is skipped without it.
system-deps:
	@if ! command -v openssl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing openssl"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; \
	  else \
	    echo "the tests need openssl: install it (Debian: sudo apt-get install openssl)" >&2; exit 1; \
	  fi; \
	fi
	@command -v systemd-analyze >/dev/null 2>&1 || \
	  echo "note: systemd-analyze not found; the unit verification test will be skipped" \
	       "(Debian: apt-get install systemd)"
# mbsync (package isync) and offlineimap are the real IMAP clients of tests/imap/test_mbsync.py and
# test_offlineimap.py: installed when root with apt-get, else their tests are skipped, saying why.
	@missing=""; \
	command -v mbsync >/dev/null 2>&1 || missing="$$missing isync"; \
	command -v offlineimap >/dev/null 2>&1 || missing="$$missing offlineimap"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	      echo "note: could not install$$missing; the mbsync/offlineimap tests will be skipped" >&2; \
	  else \
	    echo "note: the mbsync/offlineimap tests will be skipped: install$$missing" \
	         "(Debian: sudo apt-get install$$missing)" >&2; \
	  fi; \
	fi

test: $(STAMP_TEST) system-deps
	$(PY) -m pytest -q -p no:cacheprovider --timeout=$(PYTEST_TIMEOUT) --durations=25 $(PYTEST_ARGS)

bench: $(STAMP_RUN)
	$(PY) bench/submit.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find bridge tests bench -name __pycache__ -type d -prune -exec rm -rf {} +
