# Everything iptserver needs, from a fresh Debian machine, as root.
#   make demo   set up, then check and explain the UK/RU/US example
#   make test   set up, then run the whole test suite
#   make lint   ruff and mypy
#   make bench  the benchmarks under bench/
#   make fuzz   a million fuzzed datagrams against a real iptserver

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GEOIP_DB ?= /var/lib/iptserver/country.mmdb
export IPTSERVER_GEOIP := $(GEOIP_DB)
ARTIFACTS := artifacts

# Debian packages the project and its tests use.
APT_PACKAGES := python3 python3-venv python3-dev gcc iproute2 iptables ipset npm wireguard-go wireguard-tools chromium pdns-recursor lua-socket frr zbar-tools docker.io docker-compose debootstrap dnsperf dnsmasq-base

.PHONY: setup apt venv geoip demo test lint bench fuzz clean

setup: apt venv geoip

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		if [ $$p = npm ] && command -v npm >/dev/null; then continue; fi; \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

geoip: $(GEOIP_DB)

$(GEOIP_DB): | venv
	$(BIN)/iptserver geoip update --dest $@

demo: setup
	@$(BIN)/iptserver demo

test: setup lint
	mkdir -p $(ARTIFACTS)
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check iptserver tests bench
	$(BIN)/ruff format --check iptserver tests bench
	$(BIN)/mypy

fuzz: setup
	$(BIN)/python bench/fuzz.py

bench: setup
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/dns.py
	$(BIN)/python bench/leak.py
	$(BIN)/python bench/recursor.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/held.py
	$(BIN)/python bench/convergence.py
	$(BIN)/python bench/office_policy.py

clean:
	rm -rf $(VENV) $(ARTIFACTS) .pytest_cache .mypy_cache .ruff_cache
