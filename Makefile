# One entry point for people and CI. Everything bootstraps its own .venv from a fresh
# clone with only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
NODES ?= 3
DATA ?= ./data
PYTEST_ARGS ?=
SOAK_MINUTES ?= 30

# The editable install is "strict" (a link tree under build/) so mypy can see the
# mapped package names; a new module file needs a re-link, hence the source list.
SOURCES := $(shell find store client cluster proto web -name '*.py' -o -name '*.pyi' 2>/dev/null)

.PHONY: run shop test test-slow check lint typecheck proto proto-check bench bench-compare chaos soak clean install wheel-check

$(VENV)/.stamp: pyproject.toml $(SOURCES)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	@touch $@

install: $(VENV)/.stamp

run: $(VENV)/.stamp
	$(PY) -m sessionquorum.cluster up --nodes $(NODES) --data-dir $(DATA)

# The shop example (examples/shop/): a 3-node cluster in ./shop-data and two app servers
# (uvicorn, ports 8001 and 8002) sharing its sessions; Ctrl-C stops everything.
shop: $(VENV)/.stamp
	$(PY) -m examples.shop --data-dir ./shop-data

# The bench extra too: a smoke test runs the side-by-side harness (etcd and Redis from .ci/run).
test: $(VENV)/.bench-stamp
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Long-run claims (e.g. a follower catching up after 20,000 writes): minutes, not in `test`.
test-slow: $(VENV)/.stamp
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(VENV)/.stamp
	$(PY) -m ruff check .
	$(PY) -m ruff format --check store client cluster web examples tests bench proto/generate.py

typecheck: $(VENV)/.stamp
	$(PY) -m mypy -p sessionquorum.store -p sessionquorum.client -p sessionquorum.cluster -p sessionquorum.web
	$(PY) -m mypy tests/chaos tests/soak tests/unit/test_cluster_*.py tests/integration/test_cli_script.py \
		tests/unit/test_metrics.py tests/unit/test_logs.py tests/integration/test_metrics.py \
		tests/integration/test_web_cluster.py tests/integration/test_shop_browser.py tests/web examples \
		bench/web_latency.py tests/unit/test_backup.py tests/integration/test_backup.py bench/snapshot_size.py \
		tests/unit/test_events.py tests/unit/test_event_stream.py \
		tests/integration/test_events.py bench/bench_apply_events.py

proto: $(VENV)/.stamp
	$(PY) proto/generate.py

proto-check: $(VENV)/.stamp
	$(PY) proto/generate.py --check

check: lint typecheck proto-check test

bench: $(VENV)/.stamp
	$(PY) bench/bench_ops.py

# sessionquorum side by side with etcd (3 members) and Redis on 127.0.0.1 (bench/README.md).
# Installs Debian's etcd-server and redis-server when missing, and the bench extra into the venv.
# BENCH_REPETITIONS=1 BENCH_DURATION_S=2 for a quick look; BENCH_ARGS for any other flag.
BENCH_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/.bench-stamp: $(VENV)/.stamp
	$(PY) -m pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=strict
	@touch $@

bench-compare: $(VENV)/.bench-stamp
	@command -v etcd >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 || { \
		echo "installing etcd-server and redis-server (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server redis-server >/dev/null; }
	$(PY) -m bench.compare $(BENCH_ARGS)

# The full fault-injection matrix (tests/chaos/; minutes; partitions need root, iproute2 and iptables).
# SEED=N replays a run; reports (JSON + PNG timeline) go to chaos-results/.
chaos: $(VENV)/.stamp
	$(PY) -m tests.chaos --matrix full --out chaos-results $(if $(SEED),--seed $(SEED))

# A bounded soak (default 30 min; SOAK_MINUTES=3 for a quick one): mixed load, low compaction
# thresholds, a follower killed, a node down until it needs a snapshot, the leader's clock +1 h.
# JSON + PNG go to soak-results/; the exit status is 1 when a verdict fails (tests/soak/).
# SOAK_COMPACTION=off keeps the default thresholds: the journal grows and the flat verdict fails.
soak: $(VENV)/.stamp
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m tests.soak --out soak-results

# Build the sdist and wheel, install the wheel into a fresh venv and use it: `sessionquorum
# --version`, a local cluster, a client round trip (.ci/wheel-check). Not part of `make test`;
# .ci/run calls it after the tests.
wheel-check: $(VENV)/.stamp
	PYTHON=$(PYTHON) .ci/wheel-check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
