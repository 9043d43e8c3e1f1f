# expressway-certd developer entry points. `make test` installs everything it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip prints a warning per package for this machine's unused local indexes; hide only those.
QUIET_PIP := { grep -v '^WARNING: Location' || true; }

.PHONY: demo test lint bench fuzz debs venv clean libest

venv: $(STAMP)

$(STAMP): pyproject.toml packaging/lab/pyproject.toml
	# gssapi/krb5 (Kerberos tests) build against the MIT Kerberos headers.
	bash scripts/install-debs.sh libkrb5-dev gcc
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	# The simulators are the lab extra, a distribution of their own (packaging/lab/).
	$(PY) -m pip install -q -e ./packaging/lab -e '.[test,lab]' 2>&1 | $(QUIET_PIP)
	$(PY) -c 'import expressway_certd.monitor, expressway_certd_lab, acme, spnego, dns'
	touch $(STAMP)

# Debian packages the tests start on loopback (installed once, services not auto-started);
# systemd for `systemd-analyze` (the unit file checks).
debs:
	bash scripts/install-debs.sh prometheus prometheus-alertmanager postgresql pebble bind9 \
		krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc systemd chromium graphviz openssl \
		make libssl-dev curl xz-utils patch

lint: venv
	$(VENV)/bin/ruff check expressway_certd monitor renewers alerts lab tests
	$(VENV)/bin/ruff format --check expressway_certd monitor renewers alerts lab tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Cisco's libest EST server, built from Debian's source package (scripts/build-libest.sh).
libest: debs
	bash scripts/build-libest.sh

# The suite runs on TEST_WORKERS pytest-xdist workers (docs/ARCHITECTURE.md, "Test speed");
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 3
test: debs venv lint libest
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25 -n $(TEST_WORKERS) --dist loadgroup

demo: venv
	$(VENV)/bin/expressway-certd demo

# Property tests with fresh random inputs and 3,000 examples per parser (make test uses a fixed seed).
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=3000 $(VENV)/bin/pytest -q -p no:cacheprovider \
		tests/unit/test_fuzz_parsers.py tests/unit/test_facts_fuzz.py tests/unit/test_config_fuzz.py

# Every benchmark takes size options (python -m tests.bench.bench_NAME --help); the defaults are
# the sizes of issue 11 (1,000-endpoint scan, 1,000-target renewal storm, 3,000-endpoint failover).
bench: venv
	bash scripts/install-debs.sh prometheus-blackbox-exporter certbot pebble bind9 prometheus \
		postgresql
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV)
