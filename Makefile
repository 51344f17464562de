# smsq: `make demo` runs it end to end; `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test check lint typecheck pytest chaos bench clean prometheus-tools

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/smsq demo

test: lint typecheck prometheus-tools pytest

# prometheus and promtool for the deploy/ checks and the metrics integration test: the ones on
# PATH, else Debian's package unpacked into the venv (no service is installed or started).
PROM_DIR := $(VENV)/prometheus
prometheus-tools: install
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then :; \
	elif [ -x $(PROM_DIR)/usr/bin/promtool ] && [ -x $(PROM_DIR)/usr/bin/prometheus ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then \
		tmp=$$(mktemp -d) && \
		{ (cd $$tmp && apt-get download prometheus >/dev/null 2>&1) || \
		  { apt-get update >/dev/null 2>&1 && (cd $$tmp && apt-get download prometheus >/dev/null 2>&1); }; } && \
		dpkg-deb -x $$tmp/prometheus_*.deb $(PROM_DIR) && rm -rf $$tmp && \
		echo "prometheus and promtool unpacked into $(PROM_DIR)" || \
		{ rm -rf $$tmp; echo "could not get Debian's prometheus package: its tests will skip"; }; \
	else echo "no apt-get: prometheus/promtool tests will skip"; fi

lint: install
	$(BIN)/ruff check worker producers tests bench
	$(BIN)/ruff format --check worker producers tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q

# The chaos suite at length (its short form runs in `make test`); sizes from the environment.
chaos: install
	SMSQ_CHAOS_LONG=1 SMSQ_CHAOS_RUNS=$${SMSQ_CHAOS_RUNS:-3} SMSQ_CHAOS_RECIPIENTS=$${SMSQ_CHAOS_RECIPIENTS:-20000} \
	SMSQ_CHAOS_KILLS=$${SMSQ_CHAOS_KILLS:-10} SMSQ_CHAOS_INTERVAL=$${SMSQ_CHAOS_INTERVAL:-2} \
	SMSQ_CHAOS_HEARTBEAT=$${SMSQ_CHAOS_HEARTBEAT:-15} SMSQ_CHAOS_MAINTENANCE=$${SMSQ_CHAOS_MAINTENANCE:-5} \
	$(BIN)/python -m pytest -q -s tests/chaos

# Every scenario beside its ceilings in one run: bench/results/bench.json and bench.png
# (docs/performance.md). `make bench BENCH_ARGS=--quick` for the two-minute form.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS) --out bench/results/bench.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
