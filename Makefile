# zone-agent: `make demo` runs a simulated warehouse zone; `make test` runs every check.
# Both set up what they need on a fresh Debian / Raspberry Pi OS machine, and are safe to
# run again: a venv in .venv, the package installed editable, Mosquitto, NATS and RabbitMQ
# (the clustered-broker tests) through apt-get.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup system-packages browser test test-fast lint typecheck pytest demo bench clean

setup: $(STAMP) system-packages

system-packages:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	$(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(PY): | system-packages
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check agent devices tests bench testing
	$(PY) -m ruff format --check agent devices tests bench testing

typecheck: setup
	$(PY) -m mypy agent devices

# The screens are tested in a real headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing: chromium"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

pytest: setup browser
	$(PY) -m pytest

test: lint typecheck pytest

# The inner loop (under a minute): every test that needs no real broker, no NATS or RabbitMQ
# and is not a long whole-process scenario. Nodes and the OMS meet on the in-process broker
# (agent/link/memory.py). CI runs the full `make test`.
test-fast: setup
	$(PY) -m pytest -q -m "not broker and not slow and not cluster"

# make demo ARGS=--keep-running (make itself would take a bare --keep-running as its own)
demo: setup
	$(PY) -m agent.oms.demo $(ARGS)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
