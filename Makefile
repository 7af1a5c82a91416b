# zone-agent: `make demo` runs a simulated warehouse zone; `make test` runs every check;
# `make deb` builds the Debian package. On a fresh Debian without make:
#   sudo apt-get install -y make   (or: sudo apt-get install -y make && make demo)
# Each target installs with apt only what it needs (packaging/apt-install.sh, which leaves
# no broker it installed enabled or running: the demo and the tests start their own on
# loopback ports), then a venv in .venv with the package installed editable.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT := packaging/apt-install.sh

# The demo: its private Mosquitto, a venv, openssl.
DEMO_APT := mosquitto python3-venv openssl
# The tests add: mosquitto_sub/pub (bench/ compares against them), NATS and RabbitMQ (broker
# compatibility and clusters), Chromium (the screens in a headless browser), debootstrap
# (the package installed in a clean Debian root, tests/test_deb.py), CUPS's ippeveprinter
# with the avahi and D-Bus daemons it will not start without (the IPP label printer,
# testing/ippserver.py, which runs its own of both on loopback), PostgreSQL (the site
# service's two-instance failover: tests start a private one with initdb) and Node.js (an OMS
# in another language against the site service's API, tests/oms_node/), iproute2 and
# nftables (a node behind a bad Wi-Fi link in a network namespace, tests/test_wifi_e2e.py).
TEST_APT := mosquitto-clients nats-server rabbitmq-server chromium debootstrap \
	cups-ipp-utils avahi-daemon dbus-daemon postgresql nodejs iproute2 nftables

.PHONY: setup demo-packages test-packages browser test test-fast lint typecheck pytest demo bench \
	deb deb-arm64 clean

setup: $(STAMP) demo-packages

demo-packages:
	@$(APT) $(DEMO_APT)

test-packages:
	@$(APT) $(TEST_APT)

# Kept for those who ran it by name: the browser is one of the test packages.
browser: test-packages

$(PY): | demo-packages
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,site]"
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check agent devices tests bench testing
	$(PY) -m ruff format --check agent devices tests bench testing

typecheck: setup
	$(PY) -m mypy agent devices

pytest: setup test-packages
	$(PY) -m pytest

test: lint typecheck pytest

# The inner loop (under a minute): every test that needs no real broker, no NATS or RabbitMQ
# and is not a long whole-process scenario, in 4 pytest-xdist workers. Nodes and the OMS meet
# on the in-process broker (agent/link/memory.py). CI runs the full `make test`, serially.
test-fast: setup test-packages
	$(PY) -m pytest -q -n 4 -m "not broker and not slow and not cluster"

# make demo ARGS=--keep-running (make itself would take a bare --keep-running as its own)
demo: setup
	$(PY) -m agent.oms.demo $(ARGS)

bench: setup test-packages
	$(PY) -m bench

# The Debian package, built in a clean Debian root of the target architecture (the venv
# at its final path, /opt/zone-agent/venv): packaging/build-deb.sh, docs/install-pi.md.
# deb-arm64 runs under qemu-user (binfmt_misc): minutes the first time, by hand, not in CI.
deb: setup
	@$(APT) debootstrap
	$(SUDO) packaging/build-deb.sh amd64

deb-arm64: setup
	@$(APT) debootstrap qemu-user-static binfmt-support
	$(SUDO) packaging/build-deb.sh arm64

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
