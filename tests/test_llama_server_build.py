"""The embedded engine's llama.cpp build: portable flags, a build cache keyed by them, a real generation."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

import pytest

from synthembed.synth.config import EngineConfig
from synthembed.synth.embedded import EmbeddedServer, check_cpu, server_binary, smoke

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llama_server", REPO / "scripts" / "llama_server.py")
llama_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llama_server)

V3 = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "amx_tile"}


def test_profile_never_depends_on_more_than_the_baseline():
    assert llama_server.choose_profile("x86_64", V3) == "x86-64-v3"
    assert llama_server.choose_profile("x86_64", V3 - {"avx2"}) == "x86-64"
    assert llama_server.choose_profile("aarch64", set()) == "generic"
    for profile, (args, required) in llama_server.PROFILES.items():
        assert "-DGGML_NATIVE=OFF" in args, f"{profile} would tune the build to the building CPU"
        assert not any("AVX512" in a and "=ON" in a or "AMX" in a for a in args)
        assert not {f for f in required if f.startswith(("avx512", "amx"))}
    assert "-DGGML_NATIVE=OFF" in llama_server.build_spec("x86_64", V3, extra="")["cmake_args"].split()


def test_a_build_made_with_other_flags_is_never_selected(tmp_path):
    a = llama_server.build_spec("x86_64", V3, extra="")
    assert a == llama_server.build_spec("x86_64", V3, extra=""), "the key is deterministic"
    others = [
        llama_server.build_spec("x86_64", V3 - {"avx2"}, extra=""),     # another baseline
        llama_server.build_spec("x86_64", V3, extra="-DGGML_CUDA=ON"),  # user flags
        {**a, "compiler": "g++ 14"}, {**a, "version": "0.3.37"}, {**a, "machine": "aarch64"},
    ]
    keys = {llama_server.build_key(s) for s in others} | {a["key"]}
    assert len(keys) == len(others) + 1
    dirs = {llama_server.build_dir({**s, "key": llama_server.build_key(s)}, tmp_path) for s in [a, *others]}
    assert len(dirs) == len(others) + 1
    # A folder that holds a finished build of exactly these flags is reused without building.
    folder = llama_server.build_dir(a, tmp_path)
    folder.mkdir(parents=True)
    (folder / "llama-server").write_bytes(b"binary")
    (folder / "build.json").write_text(json.dumps(a))
    assert llama_server.build(a, folder) == folder


def test_the_engine_refuses_a_build_this_cpu_cannot_run(tmp_path):
    info = tmp_path / "llama-server-build.json"
    info.write_text(json.dumps({"required_cpu_flags": ["avx2", "fma"]}))
    check_cpu(info, flags={"avx2", "fma", "sse4_2"})
    with pytest.raises(RuntimeError, match="lacks: avx2.*run scripts/setup.sh"):
        check_cpu(info, flags={"fma", "sse4_2"})


def test_a_missing_server_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHEMBED_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match="SYNTHEMBED_LLAMA_SERVER=.*nope is not a file"):
        EmbeddedServer(EngineConfig(kind="embedded")).start()


def test_another_server_binary_is_the_one_started(tmp_path, monkeypatch):
    other = tmp_path / "my-llama-server"
    other.symlink_to(Path(sys.prefix) / "bin" / "llama-server")
    monkeypatch.setenv("SYNTHEMBED_LLAMA_SERVER", str(other))
    with EmbeddedServer(EngineConfig(kind="embedded", n_ctx=256, batch_size=1, n_threads=1)) as srv:
        assert srv.proc.args[0] == str(other)  # and it answered /health, so it runs


def test_slots_follow_the_requests_in_flight_and_each_gets_its_context():
    srv = EmbeddedServer(EngineConfig(kind="embedded", batch_size=4, concurrency=2, n_ctx=1024))
    srv.port = 1
    cmd = srv._command()
    assert cmd[cmd.index("--parallel") + 1] == "8" and cmd[cmd.index("--ctx-size") + 1] == str(8 * 1024)
    cmd = EmbeddedServer(EngineConfig(kind="embedded", parallel=3, chat_template="gemma"))._command()
    assert cmd[cmd.index("--parallel") + 1] == "3" and cmd[cmd.index("--chat-template") + 1] == "gemma"


def test_a_built_in_chat_template_formats_the_prompt():
    """The packaged Gemma GGUF has no chat template: `chat_template: gemma` must give Gemma's turn markers
    (the real server, asked to format a conversation without generating)."""
    with EmbeddedServer(EngineConfig(kind="embedded", model="gemma3-270m", chat_template="gemma", n_ctx=256,
                                     batch_size=1, n_threads=1)) as srv:
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/apply-template",
                                     data=json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode())
        prompt = json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt"]
    assert prompt == "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.slow
def test_installed_llama_server_really_generates_on_this_cpu():
    assert smoke().strip()  # a few real tokens from the packaged SmolLM2, through the engine's own start-up
    installed = llama_server.installed_spec()
    assert installed is not None, "scripts/setup.sh records the build it installed"
    assert "-DGGML_NATIVE=OFF" in installed["cmake_args"] and installed["key"] == llama_server.build_spec()["key"]
    assert server_binary().samefile(Path(sys.prefix) / "bin" / "llama-server")
