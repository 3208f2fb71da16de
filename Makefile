# dockyard: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine (as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests and the demo use: venv support for the system Python, curl for the
# demo, btrfs-progs for the btrfs driver tests, busybox-static for test images, skopeo and umoci
# as independent image tools, graphviz to draw the image graph, iptables for the bridge
# network's NAT and filter rules, iproute2 for the network tests' checks.
APT_PACKAGES := python3-venv curl btrfs-progs busybox-static skopeo umoci graphviz iptables iproute2 docker-registry apache2-utils
TYPED := engine graph drivers registry
# docker-compose 1.29.2 for the compatibility tests, in a venv of its own: it needs docker 6.1,
# requests<2.32 and urllib3<2, and its PyYAML 5.4.1 only builds with Cython<3.
COMPOSE_VENV := .venv-compose

.PHONY: all deps system-deps demo test test-fast lint typecheck format clean

all: test

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run as root, or install them)"; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml contrib/plugins/dockyard-example/pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -e contrib/plugins/dockyard-example
	touch $@

$(COMPOSE_VENV)/.installed:
	@$(MAKE) --no-print-directory system-deps
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/python -m pip install -q 'cython<3' wheel setuptools
	$(COMPOSE_VENV)/bin/python -m pip install -q --no-build-isolation 'PyYAML==5.4.1'
	$(COMPOSE_VENV)/bin/python -m pip install -q docker-compose==1.29.2 'docker==6.1.3' \
	  'requests<2.32' 'urllib3<2'
	touch $@

deps: $(VENV)/.installed $(COMPOSE_VENV)/.installed

demo: deps
	contrib/demo.sh $(BIN)/dockyard

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: deps
	$(BIN)/mypy --strict $(TYPED)

format: deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint typecheck
	$(BIN)/pytest -q -rs

test-fast: deps
	$(BIN)/pytest -q -m "not slow" tests/unit

clean:
	rm -rf $(VENV) $(COMPOSE_VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
