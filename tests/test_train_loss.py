"""InfoNCE, duplicate masking, data mixing and GradCache exactness (tiny model, no Ray)."""

from __future__ import annotations

import math

import pytest
import torch

from synthembed.train import DataSource, InfoNCELoss, TrainConfig, duplicate_mask
from synthembed.train.loss import false_negative_mask
from synthembed.train.data import BatchPlan, ContrastiveCollator, Examples, mix_sources, text_key
from synthembed.train.gradcache import ContrastiveStep, length_groups
from synthembed.train.lora import autocast_dtype, build_lora_embedder, make_embed_fn, trainable_parameters
from train_helpers import randomize_lora_b, toy_rows, write_examples


def test_infonce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    d = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # d0, d1 positives; d2 a hard negative
    tau = 0.5
    loss = InfoNCELoss(temperature=tau)(q, d).item()

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    expected = 0.0
    for i, qi in enumerate(q.tolist()):
        s = [cos(qi, dj) / tau for dj in d.tolist()]
        expected += -(s[i] - math.log(sum(math.exp(x) for x in s)))
    expected /= 2
    assert loss == pytest.approx(expected, abs=1e-6)


def test_duplicate_mask_removes_exactly_the_duplicate_columns():
    # positives: "a", "b", "a"; docs: the 3 positives + hard negatives "c", "b"
    k = {t: text_key(t) for t in "abc"}
    pos = torch.tensor([k["a"], k["b"], k["a"]])
    docs = torch.tensor([k["a"], k["b"], k["a"], k["c"], k["b"]])
    mask = duplicate_mask(pos, docs)
    expected = torch.tensor([
        [False, False, True, False, False],  # row 0 (a): the other "a" is masked, its own column is not
        [False, False, False, False, True],  # row 1 (b): a hard negative equal to its positive
        [True, False, False, False, False],  # row 2 (a)
    ])
    assert torch.equal(mask, expected)
    # the loss ignores masked columns: for row 0 it equals cross-entropy over the unmasked columns only
    F = torch.nn.functional
    q = torch.randn(3, 4)
    d = torch.randn(5, 4)
    d[2] = q[0] * 10  # a duplicate that would dominate row 0's softmax if it were not masked
    loss_fn = InfoNCELoss(temperature=0.05)
    row0 = loss_fn(q[:1], d, pos[:1], docs)
    kept = F.normalize(q[:1]) @ F.normalize(d[[0, 1, 3, 4]]).T / 0.05
    assert row0.item() == pytest.approx(F.cross_entropy(kept, torch.tensor([0])).item(), abs=1e-5)
    unmasked = InfoNCELoss(temperature=0.05, mask_duplicates=False)(q[:1], d, pos[:1], docs)
    assert unmasked.item() > row0.item() + 1.0


def test_false_negative_mask_removes_exactly_the_columns_above_the_margin():
    # cos(q0, d) = 0.8, 1.0, 0.6, 0.5; cos(q1, d) = 0.96, 0.6, 1.0, 0.9928
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    d = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.6, 0.8], [0.5, 0.866025]])
    cos = torch.nn.functional.normalize(q) @ torch.nn.functional.normalize(d).T
    # row 0's positive is d0 (cos 0.8): d1 (1.0) beats it by 0.2 > 0.1, d2 (0.6) does not
    # row 1's positive is d1 (cos 0.6): d0, d2 and d3 all beat it by more than 0.1
    mask = false_negative_mask(cos, margin=0.1)
    assert torch.equal(mask, torch.tensor([[False, True, False, False], [True, False, True, True]]))
    assert not false_negative_mask(cos, margin=0.5)[0].any()  # 1.0 - 0.8 = 0.2 < 0.5
    # the loss is cross-entropy over the kept columns only
    F = torch.nn.functional
    got = InfoNCELoss(temperature=0.05, false_negative_margin=0.1)(q, d).item()
    row0 = F.cross_entropy(cos[0, [0, 2, 3]][None] / 0.05, torch.tensor([0]))
    row1 = F.cross_entropy(cos[1, [1]][None] / 0.05, torch.tensor([0]))
    assert got == pytest.approx(((row0 + row1) / 2).item(), abs=1e-5)
    assert InfoNCELoss(temperature=0.05)(q, d).item() > got


def test_mixing_ratios_and_deterministic_plan(tmp_path):
    a = write_examples(tmp_path / "a.parquet", toy_rows(10))
    b = write_examples(tmp_path / "b" / "part-0.parquet", toy_rows(20))
    ex = mix_sources([DataSource(path=str(a), ratio=2.0), DataSource(path=str(tmp_path / "b"), ratio=0.5)], seed=1)
    assert len(ex) == 10 * 2 + 10
    plan = BatchPlan(len(ex), batch_size=8, epochs=2, seed=3)
    assert plan.total_steps == 2 * (30 // 8)
    whole = plan.indices(4)
    assert plan.indices(4, 0, 2) + plan.indices(4, 1, 2) == whole  # workers' slices concatenate to the batch
    assert BatchPlan(len(ex), 8, 2, 3).indices(4) == whole  # the data position is a function of the step
    with pytest.raises(ValueError, match="lacks column"):
        bad = write_examples(tmp_path / "bad.parquet", [{"query": "x"}])
        mix_sources([DataSource(path=str(bad))])


def test_same_task_batches_keep_one_type_per_whole_batch():
    # 23 sts, 17 bitext, 6 short_long examples, batch 5: 4 + 3 + 1 whole batches of one type per epoch, then the
    # 3 + 2 + 1 leftovers pool into 1 mixed batch (one example dropped): floor(46 / 5) = 9 batches, as without groups
    groups = ["sts"] * 23 + ["bitext"] * 17 + ["short_long"] * 6
    plan = BatchPlan(len(groups), batch_size=5, epochs=2, seed=7, groups=groups)
    assert plan.steps_per_epoch == 9 and plan.total_steps == 18
    for epoch in range(2):
        batches = [plan.indices(epoch * 9 + i) for i in range(9)]
        kinds = [{groups[i] for i in b} for b in batches]
        pure = [next(iter(k)) for k in kinds if len(k) == 1]
        assert sorted(pure) == ["bitext"] * 3 + ["short_long"] + ["sts"] * 4  # the leftover batch cannot be pure
        used = [i for b in batches for i in b]
        assert len(used) == len(set(used)) == 45  # no example twice in an epoch, one left over
    assert plan.indices(3) != plan.indices(12)  # each epoch reshuffles
    assert plan.indices(5, 0, 5) + plan.indices(5, 1, 5) == plan.indices(5)[:2]
    assert BatchPlan(46, 5, 2, 7, groups=groups).indices(11) == plan.indices(11)  # resumable: a function of the step
    mixed = BatchPlan(46, 5, 2, 7)
    assert sum(len({groups[i] for i in mixed.indices(s)}) == 1 for s in range(9)) < 7  # without groups: mixed


def _tiny_config(**kw) -> TrainConfig:
    base = dict(
        model={"source": "tiny-llama", "max_length": 48},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        temperature=0.05,
        batch_size=6,
    )
    base.update(kw)
    return TrainConfig(**base)


def _lora_and_batch(config, rows):
    torch.manual_seed(0)
    emb = build_lora_embedder(config, torch.device("cpu"))
    randomize_lora_b(emb.model)
    batch = ContrastiveCollator(emb, config.model.max_length)(Examples(
        [r["instruction"] for r in rows], [r["query"] for r in rows], [r["positive"] for r in rows], [r["hard_negative"] for r in rows]
    ))
    return emb, batch


def _reference_grads(config, rows):
    """One padded pass per column and the loss, no grouping machinery: what the paper writes down."""
    emb, batch = _lora_and_batch(config, rows)
    embed = make_embed_fn(emb, autocast_dtype(config, torch.device("cpu")))
    loss = InfoNCELoss(config.temperature)(embed(batch.query_ids), embed(batch.doc_ids), batch.pos_keys, batch.doc_keys)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in trainable_parameters(emb.model)]


def _step_grads(config, rows, chunk_size=None, micro_batch_size=None):
    emb, batch = _lora_and_batch(config, rows)
    step = ContrastiveStep(make_embed_fn(emb, autocast_dtype(config, torch.device("cpu"))), InfoNCELoss(config.temperature), chunk_size,
                           micro_batch_size=micro_batch_size)
    loss = step(batch)
    return loss, [p.grad.clone() for p in trainable_parameters(emb.model)]


def test_gradcache_chunked_equals_unchunked():
    config = _tiny_config()
    rows = toy_rows(6)
    loss_full, grads_full = _reference_grads(config, rows)
    loss_chunk, grads_chunk = _step_grads(config, rows, chunk_size=2)
    assert loss_chunk == pytest.approx(loss_full, abs=1e-5)
    assert sum(g.abs().sum().item() for g in grads_full) > 0
    for a, b in zip(grads_full, grads_chunk):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_gradcache_in_bf16_autocast_tracks_the_full_batch():
    """bf16 rounds differently per chunk, so equality becomes closeness: same loss, same gradient direction."""
    config = _tiny_config(precision="bf16")
    rows = toy_rows(6)
    loss_full, grads_full = _reference_grads(config, rows)
    loss_chunk, grads_chunk = _step_grads(config, rows, chunk_size=2)
    assert all(g.dtype == torch.float32 for g in grads_chunk)  # LoRA weights (and AdamW state) stay fp32
    assert loss_chunk == pytest.approx(loss_full, rel=2e-2)
    full, chunk = torch.cat([g.flatten() for g in grads_full]), torch.cat([g.flatten() for g in grads_chunk])
    assert torch.nn.functional.cosine_similarity(full, chunk, dim=0) > 0.99
    assert (chunk.norm() / full.norm()).item() == pytest.approx(1.0, rel=5e-2)


def test_length_grouped_micro_batches_equal_one_pass():
    """Sorting texts by length into small forward passes changes the cost, not the loss or gradients."""
    config = _tiny_config(model={"source": "tiny-llama", "max_length": 400})  # no truncation: lengths differ
    rows = toy_rows(6)
    for i, extra in enumerate([0, 9, 2, 14, 5, 1]):  # lengths out of order, so grouping really reorders
        rows[i] = {**rows[i], "query": rows[i]["query"] + " please" * extra, "positive": rows[i]["positive"] + " ok" * (14 - extra)}
    loss_full, grads_full = _reference_grads(config, rows)
    loss_micro, grads_micro = _step_grads(config, rows, micro_batch_size=4)
    assert loss_micro == pytest.approx(loss_full, abs=1e-5)
    for a, b in zip(grads_full, grads_micro):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # inductor compiles forward and backward graphs: about a minute on 2 cores
def test_compiled_training_computes_the_eager_loss_and_gradients():
    """train.compile (fp32, so equal up to float rounding): one padded pass, length-sorted micro-batches with
    one of a single text (batch size 1 is a graph of its own) and GradCache's no-grad pass then grad pass."""
    rows = toy_rows(5)
    for i, extra in enumerate([0, 9, 2, 14, 5]):
        rows[i] = {**rows[i], "query": rows[i]["query"] + " please" * extra}
    eager_config = _tiny_config(model={"source": "tiny-llama", "max_length": 400}, batch_size=5)
    compiled_config = eager_config.model_copy(update={"compile": True})
    eager, batch = _lora_and_batch(eager_config, rows)
    compiled, _ = _lora_and_batch(compiled_config, rows)
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    # compiled in place: the names a checkpoint and the saved adapter use are the eager model's
    assert [n for n, _ in compiled.model.named_parameters()] == [n for n, _ in eager.model.named_parameters()]
    for chunk_size, micro_batch_size in ((None, None), (None, 4), (2, None)):
        results = []
        for emb in (eager, compiled):
            step = ContrastiveStep(make_embed_fn(emb, None), InfoNCELoss(eager_config.temperature), chunk_size,
                                   micro_batch_size=micro_batch_size)
            loss = step(batch)
            results.append((loss, [p.grad.clone() for p in trainable_parameters(emb.model)]))
            emb.model.zero_grad(set_to_none=True)
        (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
        assert compiled_loss == pytest.approx(eager_loss, abs=1e-5), (chunk_size, micro_batch_size)
        assert sum(g.abs().sum().item() for g in eager_grads) > 0
        for a, b in zip(eager_grads, compiled_grads):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_compile_with_gradient_checkpointing_is_refused_by_name():
    with pytest.raises(ValueError, match="train.compile and train.gradient_checkpointing"):
        _tiny_config(compile=True, gradient_checkpointing=True)


def test_length_groups_sort_longest_first_and_cover_every_text_once():
    ids = [[1] * n for n in (3, 7, 1, 7, 5)]
    groups = length_groups(ids, 2)
    assert groups == [[1, 3], [4, 0], [2]]
    assert length_groups(ids, None) == [[1, 3, 4, 0, 2]]


def test_bad_micro_batch_size_names_the_key():
    from synthembed.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"micro_batch_size: .*greater than or equal to 1 \(got 0\)"):
        load_config(TrainConfig, "configs/cpu-tiny.yaml", ["train.micro_batch_size=0"], section="train")
