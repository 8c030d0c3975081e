"""Serving helpers without Ray: config files, input parsing, limits, post-processing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from synthembed.config import ConfigError, load_config
from synthembed.serve import ServeConfig
from synthembed.model.batches import padded_tokens
from synthembed.serve.batching import IdleBatcher, from_base64, postprocess, to_base64
from synthembed.serve.errors import APIError
from synthembed.serve.limits import parse_input, prepare_token_ids, resolve_instruction, tokenize_texts

REPO = Path(__file__).resolve().parents[1]


def test_profile_section_and_serve_config_file_validate():
    cfg = load_config(ServeConfig, REPO / "configs" / "cpu-tiny.yaml", ["serve.model.source=tiny-llama"], section="serve")
    assert cfg.model.source == "tiny-llama" and cfg.model_name == "tiny-llama"
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)  # what `serve deploy` checks
    app = schema.applications[0]
    assert app.import_path == "synthembed.serve.app:app_builder"
    ServeConfig.model_validate(app.args)  # the app args are a valid serve section
    assert app.deployments[0].name == "EmbeddingService" and app.deployments[0].autoscaling_config


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="serve.limits.truncat|truncat"):
        load_config(ServeConfig, REPO / "configs" / "cpu-tiny.yaml", ["serve.limits.truncat=end"], section="serve")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        ServeConfig(model={"source": "tiny-llama", "max_length": 512}, batching={"max_batch_tokens": 100})


@pytest.mark.parametrize(
    "raw, param",
    [("", "input"), ([], "input"), (["a", 1], "input[1]"), (["a", ""], "input[1]"), ({"a": 1}, "input"),
     ([[1, 2], [3, "x"]], "input[1][1]"), ([[1], []], "input[1]"), (["a"] * 5, "input")],
)
def test_parse_input_names_the_bad_item(raw, param):
    with pytest.raises(APIError) as err:
        parse_input(raw, max_items=4)
    assert err.value.param == param and err.value.status in (400, 413)


def test_parse_input_forms():
    assert parse_input("a", 4) == (["a"], None)
    assert parse_input(["a", "b"], 4) == (["a", "b"], None)
    assert parse_input([1, 2, 3], 4) == (None, [[1, 2, 3]])
    assert parse_input([[1], [2, 3]], 4) == (None, [[1], [2, 3]])


def test_instruction_rules():
    assert resolve_instruction(None, None, None) is None
    assert resolve_instruction(None, "find it", None) == "find it"
    assert resolve_instruction("query", None, "default") == "default"
    assert resolve_instruction("document", None, "default") is None
    for args in [("query", None, None), ("document", "x", None), (None, "  ", None)]:
        with pytest.raises(APIError) as err:
            resolve_instruction(*args)
        assert err.value.param == "instruction"


def test_tokenize_cap_truncate_and_reject(tiny_embedder):
    texts, cap = ["short", "x" * 100], 32
    tok = tokenize_texts(tiny_embedder, texts, None, cap, "end")
    assert tok.ids == tiny_embedder.tokenize(texts, max_length=cap) and tok.truncated == 1
    assert tok.tokens == len(tok.ids[0]) + cap
    with pytest.raises(APIError) as err:
        tokenize_texts(tiny_embedder, texts, None, cap, "reject")
    assert err.value.param == "input[1]" and err.value.code == "input_too_long"
    # exactly at the cap is not "too long"
    fits = "y" * (cap - 2)  # BOS + text + EOS = cap
    assert len(tokenize_texts(tiny_embedder, [fits], None, cap, "reject").ids[0]) == cap


def test_a_huge_string_is_cut_by_characters_before_tokenizing(tiny_embedder):
    from synthembed.serve.limits import CHARS_PER_TOKEN

    cap, huge = 32, "word " * 400_000  # 2 MB: tokenizing it whole would hold the tokenizer lock
    calls = []
    original = tiny_embedder.tokenize

    def spy(texts, *a, **kw):
        calls.append(max(len(t) for t in texts))
        return original(texts, *a, **kw)

    tiny_embedder.tokenize = spy
    try:
        tok = tokenize_texts(tiny_embedder, [huge, "short"], None, cap, "end")
    finally:
        tiny_embedder.tokenize = original
    assert max(calls) <= cap * CHARS_PER_TOKEN, "the tokenizer saw the whole string"
    assert tok.ids[0] == original([huge[: cap * CHARS_PER_TOKEN]], max_length=cap)[0] and tok.truncated == 1
    with pytest.raises(APIError) as err:
        tokenize_texts(tiny_embedder, ["short", huge], None, cap, "reject")
    assert err.value.param == "input[1]" and err.value.code == "input_too_long"


def test_token_ids_vocab_and_eos(tiny_embedder):
    eos, vocab = tiny_embedder.eos_id, 50
    tok = prepare_token_ids([[1, 5, eos], [7] * 40], vocab, eos, cap=16, truncate="end")
    assert tok.ids[0] == [1, 5, eos] and tok.ids[1] == [7] * 15 + [eos] and tok.truncated == 1
    for bad in ([[1, 50]], [[-1]]):
        with pytest.raises(APIError) as err:
            prepare_token_ids(bad, vocab, eos, 16, "end")
        assert err.value.code == "invalid_token_id"
    with pytest.raises(APIError):
        prepare_token_ids([[7] * 40], vocab, eos, 16, "reject")


def test_postprocess_cut_then_renormalise_and_base64():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 10)).astype(np.float32)
    full = postprocess(v, None, True)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1, atol=1e-6)
    cut = postprocess(v, 4, True)
    np.testing.assert_allclose(cut, v[:, :4] / np.linalg.norm(v[:, :4], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(from_base64(to_base64(full[0])), full[0])
    assert padded_tokens([[1, 2, 3], [1]]) == 6


# ------------------------------------------------------------------------------------------ IdleBatcher
class GatedModel:
    """A forward pass that records its batches and, while `gate` is clear, blocks (a pass in progress)."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[list[int]]] = []
        self.threads: list[int] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, batch):
        self.batches.append([list(x) for x in batch])
        self.threads.append(threading.get_ident())
        self.started.set()
        self.gate.wait(10)
        if self.fail_on is not None and any(self.fail_on in x for x in batch):
            raise RuntimeError("forward failed")
        return np.array([[float(sum(x)), float(len(x))] for x in batch])


async def _wait_started(model: GatedModel) -> None:
    await asyncio.to_thread(model.started.wait, 10)
    model.started.clear()


def test_batcher_puts_everything_that_queued_during_a_pass_into_the_next_one():
    # Serve's own batch loop would have cut the 6 late arrivals into wait-timeout slices.
    async def scenario():
        model = GatedModel()
        batcher = IdleBatcher(model, max_batch_tokens=1000, wait_s=0.001)
        first = asyncio.ensure_future(batcher.embed([1, 2]))
        await _wait_started(model)  # pass 1 runs with [1, 2] alone
        late = [asyncio.ensure_future(batcher.embed([10 + i] * 3)) for i in range(6)]
        await asyncio.sleep(0.05)  # far longer than wait_s: the late ones wait for the model, not for a timer
        model.gate.set()
        return model, await first, await asyncio.gather(*late)

    model, first, late = asyncio.run(scenario())
    assert [len(b) for b in model.batches] == [1, 6]
    assert first.tolist() == [3.0, 2.0]
    assert [v.tolist() for v in late] == [[3.0 * (10 + i), 3.0] for i in range(6)]  # each answer is its own


def test_batcher_closes_batches_at_the_token_budget_in_arrival_order():
    async def scenario():
        model = GatedModel()
        model.gate.set()
        seen = []
        batcher = IdleBatcher(model, max_batch_tokens=12, wait_s=0.01, on_batch=lambda *a: seen.append(a))
        lengths = [4, 4, 4, 2, 6, 6, 1]
        out = await asyncio.gather(*(batcher.embed([i] * n) for i, n in enumerate(lengths)))
        return model, lengths, out, seen

    model, lengths, out, seen = asyncio.run(scenario())
    # on_batch: (items, padded tokens, seconds, inputs still queued when the pass started)
    assert [(n, t, q) for n, t, _, q in seen] == [(3, 12, 4), (2, 12, 2), (2, 12, 0)]
    # padded size = items x longest: [4,4,4] = 12; [2,6] = 12 (a third would be 18); [6,1] = 12
    assert [[len(x) for x in b] for b in model.batches] == [[4, 4, 4], [2, 6], [6, 1]]
    assert all(padded_tokens(b) <= 12 for b in model.batches)
    # every pass on one thread of the batcher's own (one OpenMP team), never on the event loop's
    assert len(set(model.threads)) == 1 and model.threads[0] != threading.get_ident()
    assert [v[1] for v in out] == lengths


def test_batcher_drops_cancelled_requests_and_survives_a_failed_pass():
    async def scenario():
        model = GatedModel(fail_on=99)
        batcher = IdleBatcher(model, max_batch_tokens=1000, wait_s=0.001)
        first = asyncio.ensure_future(batcher.embed([1]))
        await _wait_started(model)
        gone = asyncio.ensure_future(batcher.embed([7, 7]))
        bad = asyncio.ensure_future(batcher.embed([99]))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client left while the model was busy
        model.gate.set()
        await first
        with pytest.raises(RuntimeError, match="forward failed"):
            await bad
        after = await batcher.embed([5, 5])  # the worker goes on after a failed pass
        return model, after

    model, after = asyncio.run(scenario())
    assert [7, 7] not in [x for b in model.batches for x in b]
    assert model.batches == [[[1]], [[99]], [[5, 5]]]
    assert after.tolist() == [10.0, 2.0]
