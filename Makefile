# The two set-up commands of a fresh machine are `make demo` and `make test`; both install first.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-vllm demo test test-fast quality

setup:
	./scripts/setup.sh

# .venv-vllm: vLLM's CPU build beside synthembed, for the vLLM engine paths on a machine without a GPU.
setup-vllm:
	./scripts/setup-vllm.sh

demo: setup
	./scripts/demo.sh

test: setup setup-vllm
	$(PY) -m pytest tests -q -ra --durations=25

test-fast: setup
	$(PY) -m pytest tests -q -ra -m "not slow"

# Fine-tuning quality (bench/results/quality.json): the cpu-tiny pipeline through `ray job submit` with
# 300 generated examples, 3 epochs at 128 tokens, base and fine-tuned scored by the evaluate stage.
QUALITY_SETS := output_root=outputs/quality 'stages=[generate,train,evaluate]' generate.num_examples=300 \
	generate.min_per_type=8 train.model.max_length=128 train.epochs=3 train.max_steps=null train.warmup_steps=5
quality: setup
	SUMMARY=outputs/quality/summary.json ./scripts/demo.sh $(QUALITY_SETS)
	$(PY) bench/quality.py outputs/quality

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

# pydantic wheels for the GPU device check (bench/gpu_check.py) on an image that lacks it: carried with
# the checkout, installed offline. One set per CPython the image may run.
gpu-check-wheels:
	for v in 3.10 3.11 3.12 3.13; do $(PY) -m pip download -q --only-binary :all: --platform manylinux2014_x86_64 \
	  --python-version $$v -d bench/gpu_wheels pydantic; done
