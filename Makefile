# resplit — every target sets up what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned to the CPU build this machine keeps on disk; an open
# range would pull a multi-GB CUDA build (see README, "Installing").
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup redis proto proto-check lint test demo bench bench-paper certs clean

setup: $(STAMP) redis

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# redis-server is needed by `resplit up` and the tests (they start their own);
# iproute2 (ip, tc) by the testbed's network namespaces and link shaping.
redis:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v tc >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing:$$missing. Install with 'sudo apt-get install$$missing' (Debian/Ubuntu) and run make again" >&2; \
		exit 1; \
	fi

proto: $(STAMP)
	$(BIN)/python tools/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python tools/check_protos.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: setup lint proto-check
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/resplit demo

# A development CA, one certificate per compose service (+ client) and a bearer
# token under certs/ (gitignored) for docker-compose.yml. Keys are made readable
# (0644) because the containers run as another user: development only.
certs: $(STAMP)
	$(BIN)/resplit certs certs --readable-keys

# Every benchmark under bench/ (but the paper sweep) and the testbed's quick scenario
# (root), one at a time; their tables collected in results/BENCHMARKS.md (~15 min on 2 cores).
bench: setup
	$(BIN)/python tools/bench_report.py

# The paper's Table II and Fig. 3 on the emulated testbed (root; about 15 min on 2 cores):
# results/paper/table2.md and results/paper/latency_vs_bandwidth.png.
bench-paper: setup
	$(BIN)/python bench/paper.py

clean:
	-@test -x $(BIN)/resplit && $(BIN)/resplit down >/dev/null 2>&1 || true
	rm -rf $(VENV) .resplit .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
