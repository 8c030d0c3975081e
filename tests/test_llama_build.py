"""The embedded engine's llama.cpp build: portable flags, a wheel cache keyed by them, a real generation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from synthembed.synth.embedded import check_cpu, smoke

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llama_wheel", REPO / "scripts" / "llama_wheel.py")
llama_wheel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llama_wheel)

V3 = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "amx_tile"}


def test_profile_never_depends_on_more_than_the_baseline():
    assert llama_wheel.choose_profile("x86_64", V3) == "x86-64-v3"
    assert llama_wheel.choose_profile("x86_64", V3 - {"avx2"}) == "x86-64"
    assert llama_wheel.choose_profile("aarch64", set()) == "generic"
    for profile, (args, required) in llama_wheel.PROFILES.items():
        assert "-DGGML_NATIVE=OFF" in args, f"{profile} would tune the build to the building CPU"
        assert not any("AVX512" in a and "=ON" in a or "AMX" in a for a in args)
        assert not {f for f in required if f.startswith(("avx512", "amx"))}


def test_a_wheel_built_with_other_flags_is_never_selected(tmp_path):
    a = llama_wheel.build_spec("x86_64", V3, extra="")
    assert a == llama_wheel.build_spec("x86_64", V3, extra=""), "the key is deterministic"
    others = [
        llama_wheel.build_spec("x86_64", V3 - {"avx2"}, extra=""),     # another baseline
        llama_wheel.build_spec("x86_64", V3, extra="-DGGML_CUDA=ON"),  # user flags
        {**a, "compiler": "gcc 14"}, {**a, "version": "0.3.37"}, {**a, "python": "cp312"},
    ]
    keys = {llama_wheel.wheel_key(s) for s in others} | {a["key"]}
    assert len(keys) == len(others) + 1
    dirs = {llama_wheel.wheel_dir({**s, "key": llama_wheel.wheel_key(s)}, tmp_path) for s in [a, *others]}
    assert len(dirs) == len(others) + 1
    # A folder that holds a finished build of exactly these flags is reused without building.
    folder = llama_wheel.wheel_dir(a, tmp_path)
    folder.mkdir(parents=True)
    (folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"wheel")
    (folder / "build.json").write_text(json.dumps(a))
    assert llama_wheel.build(a, folder) == folder


def test_the_engine_refuses_a_build_this_cpu_cannot_run(tmp_path):
    info = tmp_path / "llama-cpp-build.json"
    info.write_text(json.dumps({"required_cpu_flags": ["avx2", "fma"]}))
    check_cpu(info, flags={"avx2", "fma", "sse4_2"})
    with pytest.raises(RuntimeError, match="lacks: avx2.*run scripts/setup.sh"):
        check_cpu(info, flags={"fma", "sse4_2"})


@pytest.mark.slow
def test_installed_llama_cpp_really_generates_on_this_cpu():
    pytest.importorskip("llama_cpp")
    assert smoke().strip(" '\"")  # a few real tokens from the packaged SmolLM2, in a child process
    installed = llama_wheel.installed_spec()
    if installed is not None:  # installed by scripts/setup.sh: the portable flags, for this machine's key
        assert "-DGGML_NATIVE=OFF" in installed["cmake_args"]
        assert installed["key"] == llama_wheel.build_spec()["key"]
