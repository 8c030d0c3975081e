# The two set-up commands of a fresh machine are `make demo` and `make test`; both install first.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast bench

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

test: setup
	$(PY) -m pytest tests -q -ra --durations=25

test-fast: setup
	$(PY) -m pytest tests -q -ra -m "not slow"

# Local cluster: start a head on this machine, submit the pipeline, follow a job, stop.
.PHONY: cluster-up pipeline logs cluster-down
cluster-up: setup
	./scripts/cluster.sh start

pipeline: setup
	./scripts/demo.sh

logs:
	./scripts/cluster.sh logs $(JOB)

cluster-down:
	./scripts/cluster.sh stop
