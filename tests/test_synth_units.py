"""Unit tests of the synthetic-data pieces that need no engine: sampling, prompts, schemas, parsing."""

from __future__ import annotations

import json
import random
from collections import Counter

import pyarrow as pa
import pytest

from synthembed.config import ConfigError, load_config
from synthembed.synth import languages as L
from synthembed.synth.config import EngineConfig, GenerateConfig
from synthembed.synth.engines import _VllmPost, chat_payload, read_api_key, response_format
from synthembed.synth.transport import drop_nulls, settle_chat
from synthembed.synth.parse import Rejected, parse_brainstorm, parse_json_object, validate_example
from synthembed.synth.ledger import pending_for
from synthembed.synth.plan import build_plan, plan_family, plan_fingerprint, request_row
from synthembed.synth.prompts import brainstorm_messages, brainstorm_schema, example_messages, example_schema
from synthembed.synth.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, example_id, normalize_text
from synthembed.synth.tasks import (
    ASYMMETRIC, PAPER_TASK_MIX, SPECS, TASK_TYPES, allocate_counts, field_roles, task_instruction, sample_placeholders,
)

BOUNDS = {"short": (1, 80), "long": (20, 240)}


# ------------------------------------------------------------------------------------------ placeholders
def test_placeholder_value_sets_match_the_paper():
    assert SPECS["short_long"].placeholders["num_words"] == (50, 100, 200, 300, 400, 500)
    assert SPECS["short_long"].placeholders["query_length"] == ("less than 5 words", "5 to 15 words", "at least 10 words")
    assert SPECS["long_short"].placeholders["num_words"] == (
        "less than 10", "at least 10", "at least 50", "at least 100", "at least 200")
    assert SPECS["sts"].placeholders["low_score"] == (2.5, 3, 3.5)
    assert SPECS["bitext"].placeholders["low_score"] == (1.5, 2, 2.5)  # differs from STS
    assert SPECS["sts"].placeholders["high_score"] == SPECS["bitext"].placeholders["high_score"] == (4, 4.5, 5)
    assert SPECS["sts"].placeholders["difficulty"] == ("elementary school", "high school", "college")
    assert SPECS["short_long"].placeholders["difficulty"] == ("high school", "college", "PhD")
    assert SPECS["short_short"].placeholders == {}


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_placeholders_sampled_per_row_from_their_sets(task_type):
    rng = random.Random(0)
    draws = [sample_placeholders(task_type, rng) for _ in range(300)]
    for name, values in SPECS[task_type].placeholders.items():
        seen = {d[name] for d in draws}
        assert seen <= set(values)
        assert seen == set(values), f"{task_type}.{name}: not all values drawn in 300 rows"


# ---------------------------------------------------------------------------------------------- languages
def test_default_language_weights_follow_the_paper():
    w = L.resolve_weights()
    assert len(L.XLMR_LANGUAGES) == 100 and set(w) == set(L.XLMR_LANGUAGES)
    assert abs(sum(w.values()) - 1) < 1e-9
    assert w["English"] == pytest.approx(0.431)
    assert w["Polish"] == pytest.approx(0.030)
    for lang in ("Japanese", "German", "Spanish", "Chinese (Simplified)", "Arabic"):
        assert 0.026 <= w[lang] <= 0.03
    low = [v for k, v in w.items() if k not in L.PAPER_HIGH_RESOURCE]
    assert len(low) == 86 and max(low) == pytest.approx(min(low)) and 0.0015 < low[0] < 0.003
    rng = random.Random(1)
    counts = Counter(L.sample_language(rng, w) for _ in range(20000))
    assert 0.41 < counts["English"] / 20000 < 0.45
    assert len(counts) > 90  # the tail is reached


def test_language_subset_and_errors():
    w = L.resolve_weights(only=["English", "German", "Swahili"])
    assert set(w) == {"English", "German", "Swahili"} and w["English"] > w["German"] > w["Swahili"]
    with pytest.raises(ValueError, match="Klingon"):
        L.resolve_weights(only=["English", "Klingon"])
    assert L.resolve_weights({"German": 1, "French": 3}) == {"German": 0.25, "French": 0.75}


def test_bitext_pairs_differ_and_mostly_involve_english():
    w = L.resolve_weights()
    rng = random.Random(2)
    pairs = [L.sample_bitext_pair(rng, w) for _ in range(3000)]
    assert all(s != t for s, t in pairs)
    share = sum("English" in p for p in pairs) / len(pairs)
    assert 0.6 < share < 0.85
    with pytest.raises(ValueError, match="two languages"):
        L.sample_bitext_pair(rng, {"English": 1.0})


# ---------------------------------------------------------------------------------------------- task mix
def test_allocate_counts_exact_and_minimum():
    c = allocate_counts(1000, PAPER_TASK_MIX)
    total_w = sum(PAPER_TASK_MIX.values())
    assert sum(c.values()) == 1000
    for t, w in PAPER_TASK_MIX.items():
        assert abs(c[t] - 1000 * w / total_w) < 1
    small = allocate_counts(20, PAPER_TASK_MIX, min_per_type=2)
    assert sum(small.values()) == 20 and set(small) == set(TASK_TYPES) and min(small.values()) >= 2
    assert allocate_counts(5, {"sts": 1}) == {"sts": 5}
    with pytest.raises(ValueError, match="min_per_type"):
        allocate_counts(5, PAPER_TASK_MIX, min_per_type=1)


def test_plan_is_deterministic_and_covers_types():
    cfg = GenerateConfig(num_examples=30, min_per_type=3, languages=["English", "German", "Japanese", "Swahili"])
    counts = allocate_counts(30, cfg.task_mix, 3)
    pools = {t: [f"task {t} {i}" for i in range(3)] for t in ASYMMETRIC}
    a, b = build_plan(cfg, counts, pools), build_plan(cfg, counts, pools)
    assert a == b and len({r["request_id"] for r in a}) == 30
    assert {r["task_type"] for r in a} == set(TASK_TYPES)
    for r in a:
        if r["task_type"] == "bitext":
            assert r["src_language"] == r["language"] and r["tgt_language"] not in ("", r["src_language"])
        else:
            assert r["src_language"] == "" and r["language"] in cfg.languages
    c = build_plan(cfg.model_copy(update={"seed": 1}), counts, pools)
    assert {r["request_id"] for r in c}.isdisjoint({r["request_id"] for r in a})


def test_a_grown_plan_is_the_small_plan_plus_new_rows_only():
    cfg = GenerateConfig(num_examples=30, min_per_type=3, languages=["English", "German", "Japanese"])
    pools = {t: [f"task {t} {i}" for i in range(40)] for t in ASYMMETRIC}
    small, big = allocate_counts(30, cfg.task_mix, 3), allocate_counts(90, cfg.task_mix, 3)
    old = build_plan(cfg, small, pools)
    new = build_plan(cfg, big, pools, start=small)
    assert len(new) == 60 and {r["request_id"] for r in old}.isdisjoint(r["request_id"] for r in new)
    whole = build_plan(cfg, big, pools)
    assert sorted(r["request_id"] for r in old + new) == sorted(r["request_id"] for r in whole)
    assert plan_family(cfg) == plan_family(cfg.model_copy(update={"num_examples": 90}))
    assert plan_fingerprint(cfg) != plan_fingerprint(cfg.model_copy(update={"num_examples": 90}))
    assert plan_family(cfg) != plan_family(cfg.model_copy(update={"languages": ["English"]}))


def test_symmetric_topics_vary_sts_and_bitext_and_leave_everything_else_as_it_was():
    from synthembed.synth.plan import PLAN_KEYS
    from synthembed.synth.prompts import PROMPT_VERSION
    from synthembed.synth.schema import stable_hash
    from synthembed.synth.tasks import SYMMETRIC_TOPICS

    off = GenerateConfig(num_examples=60, min_per_type=8, languages=["English", "German", "Russian"])
    on = off.model_copy(update={"symmetric_topics": True})
    counts = allocate_counts(60, off.task_mix, 8)
    pools = {t: [f"task {t} {i}" for i in range(5)] for t in ASYMMETRIC}
    a, b = build_plan(off, counts, pools), build_plan(on, counts, pools)
    symmetric = 0
    for x, y in zip(a, b):  # same rows in the same order; only the symmetric rows' task (and so their id) moves
        same = ("task_type", "language", "src_language", "tgt_language", "placeholders", "instruction")
        assert {k: x[k] for k in same} == {k: y[k] for k in same}
        if x["task_type"] in ("sts", "bitext"):
            symmetric += 1
            assert x["task"] == "" and y["task"] in SYMMETRIC_TOPICS and x["request_id"] != y["request_id"]
            prompt = {k: json.loads(request_row("example", r, c, 0, 0)["messages"])[1]["content"]
                      for k, r, c in (("off", x, off), ("on", y, on))}
            assert "topic" not in prompt["off"] and f"Write about this topic: {y['task']}." in prompt["on"]
            # the English topic must not pull the texts into English: the line restates the row's languages
            wanted = (f"write S1 in {y['src_language']} and S2 and S3 in {y['tgt_language']}."
                      if y["task_type"] == "bitext" else f"write all three in {y['language']}.")
            assert wanted in prompt["on"] and wanted not in prompt["off"]
        else:
            assert x == y
    assert symmetric >= 16 and len(set(SYMMETRIC_TOPICS)) == len(SYMMETRIC_TOPICS)  # no topic weighted twice
    assert len({y["task"] for y in b if y["task_type"] in ("sts", "bitext")}) >= 10
    # off, the fingerprints are what they were before the setting existed, so older folders still resume and grow
    dump = off.model_dump(mode="json")
    assert plan_fingerprint(off) == stable_hash({k: dump[k] for k in ("num_examples", *PLAN_KEYS)}, PROMPT_VERSION)
    assert plan_family(off) == stable_hash({k: dump[k] for k in PLAN_KEYS}, PROMPT_VERSION)
    assert plan_family(on) != plan_family(off) and plan_fingerprint(on) != plan_fingerprint(off)


# ------------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_prompt_rendering_for_every_type(task_type):
    ph = sample_placeholders(task_type, random.Random(3))
    task = "Given a recipe name, find recipes that cook it." if task_type in ASYMMETRIC else None
    msgs = example_messages(task_type, task, "German", ph, "German", "Swahili")
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert "{" not in user.replace('{"', "").replace("{}", "") or "JSON" in user  # no unfilled placeholders
    assert "None" not in user
    for f in SPECS[task_type].fields:
        assert f'"{f}"' in user
    for v in ph.values():
        assert str(v) in user, f"placeholder value {v!r} missing from the {task_type} prompt"
    if task_type == "bitext":
        assert "German" in user and "Swahili" in user
    else:
        assert "German" in user
    if task:
        assert task in user
    assert user.rstrip().endswith("Be creative!")
    schema = example_schema(task_type, ph, BOUNDS)
    assert schema["required"] == list(SPECS[task_type].fields)
    for f, prop in schema["properties"].items():
        assert prop["type"] == "string" and prop["maxLength"] in (80, 240) and prop["minLength"] >= 1
    assert task_instruction(task_type, task)


def test_sts_roles_follow_unit_and_brainstorm_prompt():
    assert set(field_roles("sts", {"unit": "passage"}).values()) == {"long"}
    assert set(field_roles("bitext", {"unit": "phrase"}).values()) == {"short"}
    for t in ASYMMETRIC:
        user = brainstorm_messages(t, 7)[-1]["content"]
        assert "7" in user and '"tasks"' in user
    s = brainstorm_schema(7, 100)
    assert s["properties"]["tasks"]["minItems"] == s["properties"]["tasks"]["maxItems"] == 7


# ----------------------------------------------------------------------------------------------- parsing
GOOD = {"user_query": "best pumpkin soup", "positive_document": "Roast the pumpkin, then blend it with stock.",
        "hard_negative_document": "Pumpkins grow best in warm, sunny fields."}
PH = {"query_type": "common"}


def test_parser_accepts_good_and_fenced_json():
    raw = json.dumps(GOOD)
    assert validate_example("short_long", parse_json_object(raw), PH, BOUNDS)["query"] == "best pumpkin soup"
    fenced = "```json\n" + raw + "\n```"
    assert parse_json_object(fenced) == GOOD
    # raw newlines inside strings (small models under a grammar emit them) are tolerated
    assert parse_json_object('{"a": "line one\nline two"}') == {"a": "line one\nline two"}


@pytest.mark.parametrize("raw,finish,code", [
    ('{"user_query": "best pumpkin soup", "positive_document": "Roast the', "length", "truncated"),
    ('{"user_query": "best pumpkin soup", "positive_document": "Roast the', "stop", "not_json"),
    ('Sure! Here is the example: ' + json.dumps(GOOD) + " Hope it helps.", "stop", "not_json"),
    ("", "stop", "not_json"),
    ('["a", "b"]', "stop", "not_object"),
])
def test_parser_rejects_malformed(raw, finish, code):
    with pytest.raises(Rejected) as err:
        parse_json_object(raw, finish)
    assert err.value.code == code


@pytest.mark.parametrize("obj,code", [
    ({k: v for k, v in GOOD.items() if k != "hard_negative_document"}, "missing_keys"),
    ({**GOOD, "score": "5"}, "unexpected_keys"),
    ({"query": "x", "doc": "y", "neg": "z"}, "missing_keys"),
    ({**GOOD, "user_query": "   "}, "empty_field"),
    ({**GOOD, "user_query": 42}, "not_string"),
    ({**GOOD, "positive_document": "too short"}, "too_short"),
    ({**GOOD, "positive_document": "x" * 241}, "too_long"),
    ({**GOOD, "positive_document": "Roast it " * 26 + "Roast "}, "truncated"),  # exactly maxLength (240)
    ({**GOOD, "user_query": "12.5 %"}, "no_text"),
    ({**GOOD, "user_query": "Roast the pumpkin, then blend it", "positive_document": "roast the pumpkin,  then blend it."},
     "copies_query"),
    ({**GOOD, "hard_negative_document": GOOD["positive_document"].upper()}, "negative_equals_positive"),
])
def test_validator_rejects_bad_fields(obj, code):
    with pytest.raises(Rejected) as err:
        validate_example("short_long", obj, PH, BOUNDS)
    assert err.value.code == code


@pytest.mark.parametrize("label, wrong", [("5", "1"), ("好", "坏"), ("A", "B")])
def test_one_character_labels_are_valid(label, wrong):
    obj = {"input_text": "The service was quick and the staff were kind.", "label": label, "misleading_label": wrong}
    out = validate_example("long_short", obj, {}, BOUNDS)
    assert (out["positive"], out["hard_negative"]) == (label, wrong)
    with pytest.raises(Rejected, match="no_text"):  # a label still needs a letter or digit
        validate_example("long_short", {**obj, "label": "%"}, {}, BOUNDS)


def test_model_output_nested_or_huge_is_a_reject_not_a_crash():
    for raw in ("[" * 5000 + "]" * 5000, '{"S1": ' + "7" * 5000 + "}", "{" * 3000):
        with pytest.raises(Rejected) as err:
            parse_json_object(raw, "stop")
        assert err.value.code == "not_json"
    with pytest.raises(Rejected, match="not_json"):
        parse_brainstorm("[" * 5000 + "]" * 5000)


def test_validator_copy_checks_for_symmetric_types():
    ph = {"unit": "sentence"}
    with pytest.raises(Rejected, match="copies_query"):
        validate_example("sts", {"S1": "The cat sleeps.", "S2": "the cat  sleeps", "S3": "A dog barks."}, ph, BOUNDS)
    out = validate_example("short_short", {"input": "apple", "positive_document": "a red fruit"}, {}, BOUNDS)
    assert out["hard_negative"] is None


def test_brainstorm_parser():
    assert parse_brainstorm('{"tasks": ["Find recipes for a dish.", "find recipes for a dish", "x"]}') == [
        "Find recipes for a dish."]
    assert parse_brainstorm('["Classify tweets by topic."]') == ["Classify tweets by topic."]
    for raw, code in [('{"tasks": []}', "bad_brainstorm"), ('{"items": ["a long enough task"]}', "missing_keys"),
                      ('{"tasks": ["Classify', "not_json"), ('{"tasks": "Classify tweets"}', "bad_brainstorm")]:
        with pytest.raises(Rejected) as err:
            parse_brainstorm(raw)
        assert err.value.code == code


# ------------------------------------------------------------------------------------------ ids and dedup
def test_example_id_is_content_hash_on_normalised_text():
    a = example_id("sts", "Retrieve.", "The  Cat sleeps.", "A cat is asleep", None)
    assert a == example_id("sts", "Retrieve.", "the cat sleeps", "A CAT IS ASLEEP.", None)
    assert a != example_id("sts", "Retrieve.", "the cat sleeps", "A dog is asleep", None)
    assert normalize_text("  Ｈello\tWORLD! ") == "hello world"


def test_pending_for_resume_and_fallback():
    ex = pa.Table.from_pylist([{"id": "i1", "request_id": "a"}], schema=pa.schema([("id", pa.string()),
                                                                                   ("request_id", pa.string())]))
    rj = pa.Table.from_pylist([
        {"request_id": "b", "stage": "example", "engine_index": 0, "retry_next": True},
        {"request_id": "c", "stage": "example", "engine_index": 0, "retry_next": False},
        {"request_id": "d", "stage": "example", "engine_index": 0, "retry_next": True},
        {"request_id": "d", "stage": "example", "engine_index": 1, "retry_next": False},
    ])
    ids = ["a", "b", "c", "d", "e"]
    assert pending_for(0, ids, ex, rj) == ["e"]
    assert pending_for(1, ids, ex, rj) == ["b"]


def test_output_schemas_hold_the_design_columns():
    for col in ("id", "task_type", "instruction", "query", "positive", "hard_negative", "language", "src_language",
                "tgt_language", "placeholders", "generator", "prompt_version"):
        assert col in EXAMPLE_SCHEMA.names
    assert EXAMPLE_SCHEMA.field("hard_negative").nullable and not EXAMPLE_SCHEMA.field("query").nullable
    assert {"raw", "reason", "generator", "retry_next"} <= set(REJECT_SCHEMA.names)


# ----------------------------------------------------------------------------------------------- engines
def test_response_format_forms_and_payload():
    schema = example_schema("sts", {"unit": "phrase"}, BOUNDS)
    assert response_format("json_object_schema", schema) == {"type": "json_object", "schema": schema}
    assert response_format("json_schema", schema)["json_schema"]["schema"] == schema
    assert response_format("none", schema) is None
    e = EngineConfig(kind="embedded", sampling={"max_tokens": 33, "temperature": 0.7})
    p = chat_payload(e, "smollm2", [{"role": "user", "content": "hi"}], schema, seed=5)
    assert p["max_tokens"] == 33 and p["seed"] == 5 and p["response_format"]["type"] == "json_object"
    o = EngineConfig(kind="openai", base_url="https://api.example.com/v1")
    assert chat_payload(o, "gpt-4", [], schema, 1)["response_format"]["type"] == "json_schema"
    # a repetition penalty only when one is set (OpenAI's own API refuses it), named as each engine names it
    assert "repeat_penalty" not in p and "repetition_penalty" not in chat_payload(o, "gpt-4", [], schema, 1)
    penalised = {"sampling": {"repetition_penalty": 1.1}}
    assert chat_payload(EngineConfig(kind="embedded", **penalised), "m", [], None, 1)["repeat_penalty"] == 1.1
    o = EngineConfig(kind="openai", base_url="http://127.0.0.1:8000/v1", **penalised)
    assert chat_payload(o, "m", [], None, 1)["repetition_penalty"] == 1.1
    assert drop_nulls({"a": None, "b": {"c": None, "d": [1, {"e": None}]}}) == {"b": {"d": [1, {}]}}


def _settled(body, status=200, kind="", error=""):
    return {"status": status, "body": body if isinstance(body, str) else json.dumps(body), "error_kind": kind,
            "error": error}


def test_settle_chat_reads_a_completion():
    ok = {"choices": [{"message": {"content": "{}"}, "finish_reason": "length"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert settle_chat(_settled(ok)) == {"text": "{}", "finish_reason": "length", "tokens_in": 3, "tokens_out": 4,
                                         "error_kind": "", "error": ""}
    # A transport failure passes through with its class.
    out = settle_chat(_settled("", 0, "connection", "ClientConnectorError: refused"))
    assert out["error_kind"] == "connection" and "refused" in out["error"] and out["text"] == ""


@pytest.mark.parametrize("body, needle", [
    ({"error": {"message": "invalid key"}}, "invalid key"),
    ("<html><body>Bad Gateway</body></html>", "not JSON"),
    ("not json at all", "not JSON"),
    ("[" * 5000 + "]" * 5000, "nested too deep"),
    ('{"n": ' + "9" * 5000 + "}", "not JSON"),
    ({"choices": [{"message": {"content": ["a", "b"]}, "finish_reason": "stop"}]}, "content is a list"),
    ({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": "many"}},
     "usage.prompt_tokens"),
    ({"choices": [{"message": {"content": "{}"}}], "usage": {"completion_tokens": float("inf")}}, "completion_tokens"),
    ({"choices": []}, "not a chat completion"),
    ([1, 2], "not an object"),
])
def test_settle_chat_turns_hostile_bodies_into_row_errors(body, needle):
    out = settle_chat(_settled(body))
    assert out["error_kind"] == "bad_response" and needle in out["error"] and out["text"] == ""


def test_vllm_finish_reason_from_token_count():
    post = _VllmPost(max_tokens=8, max_model_len=20)
    # ray.data.llm's stage overwrites `request_id` with its own integer; ours comes back from beside it.
    row = {"request_id": 7, "synth_request_id": "r", "engine_index": 0, "generated_text": '{"a"',
           "num_input_tokens": 5}
    assert post({**row, "num_generated_tokens": 8})["finish_reason"] == "length"
    assert post({**row, "num_generated_tokens": 3})["finish_reason"] == "stop"
    assert post({**row, "num_generated_tokens": 3})["request_id"] == "r"
    assert "synth_request_id" not in post({**row, "num_generated_tokens": 3})
    assert post({**row, "num_input_tokens": 17, "num_generated_tokens": 3})["finish_reason"] == "length"  # context full
    assert parse_json_object.__name__  # the truncated row is then a `truncated` reject, not `not_json`:
    with pytest.raises(Rejected) as e:
        parse_json_object('{"a"', post({**row, "num_generated_tokens": 8})["finish_reason"])
    assert e.value.code == "truncated"


def test_engine_config_errors_and_api_key_from_env(monkeypatch):
    with pytest.raises(ValueError, match="base_url"):
        EngineConfig(kind="openai")
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        EngineConfig(kind="openai", base_url="http://x/v1", api_key_env="sk-abc123-xyz")
    e = EngineConfig(kind="openai", base_url="http://x/v1", api_key_env="SYNTH_TEST_KEY")
    monkeypatch.delenv("SYNTH_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SYNTH_TEST_KEY"):
        read_api_key(e)
    monkeypatch.setenv("SYNTH_TEST_KEY", "secret-value")
    assert read_api_key(e) == "secret-value"
    assert "secret-value" not in e.model_dump_json()


def test_generate_config_from_yaml_and_errors(tmp_path):
    cfg = load_config(GenerateConfig, "configs/cpu-tiny.yaml", ["generate.num_examples=7"], section="generate")
    assert cfg.num_examples == 7 and cfg.engine.kind == "embedded" and cfg.fallback is not None
    gpu = load_config(GenerateConfig, "configs/gpu-1node.yaml", section="generate")
    assert gpu.engine.kind == "vllm" and gpu.fallback.kind == "openai" and gpu.fallback.api_key_env == "OPENAI_API_KEY"
    with pytest.raises(ConfigError, match="task_mix"):
        load_config(GenerateConfig, None, ["generate.task_mix={classification: 1}"], section="generate")
    with pytest.raises(ConfigError, match="engine.kind"):
        load_config(GenerateConfig, None, ["generate.engine.kind=gpt"], section="generate")


def test_vllm_processor_config_builds_without_vllm():
    pytest.importorskip("ray.data.llm")
    from synthembed.synth.engines import _vllm_pre_factory, vllm_processor_config

    e = EngineConfig(kind="vllm", model="Qwen/Qwen2.5-7B-Instruct", engine_kwargs={"max_model_len": 4096},
                     concurrency=2, batch_size=16, accelerator_type="H100",
                     sampling={"max_tokens": 512, "repetition_penalty": 1.05})
    cfg = vllm_processor_config(e)
    assert cfg.model_source == "Qwen/Qwen2.5-7B-Instruct" and cfg.should_continue_on_error
    assert cfg.engine_kwargs["max_model_len"] == 4096 and cfg.batch_size == 16
    schema = example_schema("sts", {"unit": "phrase"}, BOUNDS)
    row = {"messages": json.dumps([{"role": "user", "content": "x"}]), "schema": json.dumps(schema), "seed": 3}
    pre = _vllm_pre_factory(e)(row | {"request_id": "req-1"})
    assert json.loads(pre["sampling_params"]["structured_outputs"]["json"]) == schema
    assert pre["sampling_params"]["max_tokens"] == 512 and pre["synth_request_id"] == "req-1"
    assert pre["sampling_params"]["repetition_penalty"] == 1.05
    # the engine's own tokenize/detokenize; a light chat-template stage (a 2-core node fits it beside the engine)
    assert cfg.tokenize_stage is False and cfg.detokenize_stage is False
    assert cfg.chat_template_stage == {"num_cpus": 0.25}


def test_cpu_vllm_profile_loads_for_generate_and_serve():
    from synthembed.serve import ServeConfig

    gen = load_config(GenerateConfig, "configs/cpu-vllm.yaml", section="generate")
    assert gen.engine.kind == "vllm" and gen.engine.placement_group == {"bundles": [{"CPU": 1}]}
    assert gen.engine.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert load_config(ServeConfig, "configs/cpu-vllm.yaml", section="serve").backend == "vllm"


def test_vllm_engine_env_is_settings_only():
    e = EngineConfig(kind="vllm", model="m", env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    assert e.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    with pytest.raises(ConfigError, match=r"engine: .*\['HF_TOKEN'\] look like secrets"):
        load_config(GenerateConfig, None, ["generate.engine.kind=vllm", "generate.engine.model=m",
                                           "generate.engine.env={HF_TOKEN: x}"], section="generate")
    with pytest.raises(ValueError, match="kind=vllm only"):
        EngineConfig(kind="embedded", env={"VLLM_CPU_KVCACHE_SPACE": "2"})


@pytest.mark.parametrize("task_type", ["short_long", "long_short", "sts", "bitext"])
def test_hard_negative_is_asked_for_the_positives_length(task_type):
    """A negative of a different length than the positive hands the model a length shortcut."""
    ph = sample_placeholders(task_type, random.Random(0))
    user = example_messages(task_type, "Some task.", "English", ph, "English", "German")[1]["content"]
    negative_line = next(line for line in user.splitlines()
                         if line.startswith(('- "hard_negative_document"', '- "misleading_label"', '- "S3"')))
    assert "as long as" in negative_line or "same length" in negative_line
