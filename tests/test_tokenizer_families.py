"""EOS and truncation are identical in every loader, on real tokenizers of four model families.

Per family (tokenizer_families.py): a tiny random model of the family's architecture with its real
tokenizer is trained for a few steps, exported, and then the same texts (shorter than, exactly at and
longer than max_length) are tokenized by training's collator (the base model), `Embedder` on merged/,
the serving path (`tokenize_texts`) and sentence-transformers on merged/. All must give the same ids with
exactly one EOS at the end; the embeddings of the base + adapter, of merged/ and of sentence-transformers
on merged/ must agree; serving with `truncate: reject` must refuse exactly the over-length input.
"""

from __future__ import annotations

import pytest
import torch

from synthembed.model import Embedder, format_texts
from synthembed.serve.errors import APIError
from synthembed.serve.limits import tokenize_texts
from synthembed.train import TrainConfig, run
from synthembed.train.data import ContrastiveCollator, Examples
from tokenizer_families import FAMILIES, tiny_model_dir
from train_helpers import toy_rows, write_examples

pytestmark = pytest.mark.slow

MAX_LENGTH = 24
INSTRUCTION = "Given a question, retrieve passages that answer it"


def _exact_text(embedder: Embedder, instruction: str | None) -> str:
    """A text whose ids are exactly MAX_LENGTH long (prefix + text + EOS), uncut."""
    for n in range(1, 200):
        text = " ".join(["word"] * n)
        if len(embedder.tokenize([text], instruction, max_length=10_000)[0]) == MAX_LENGTH:
            return text
    raise AssertionError("no word count gives exactly MAX_LENGTH tokens")


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(family)
    base = tiny_model_dir(family, root / "base")
    write_examples(root / "data.parquet", toy_rows(16))
    config = TrainConfig(
        model={"source": str(base), "max_length": MAX_LENGTH}, data=[{"path": str(root / "data.parquet")}],
        lora={"r": 4, "alpha": 8, "dropout": 0.0}, batch_size=4, epochs=2, lr=1e-2, warmup_steps=0,
        backend="local", storage_path=str(root / "runs"), name="t", checkpoint_every=100, torch_threads=1,
    )
    out = run(config)
    return family, base, out


def test_every_loader_gives_the_same_ids_with_one_eos(trained):
    from sentence_transformers import SentenceTransformer

    family, base, out = trained
    train_side = Embedder.load(str(base), max_length=MAX_LENGTH, dtype="float32")
    merged = Embedder.load(str(out / "merged"), max_length=MAX_LENGTH, dtype="float32")
    st = SentenceTransformer(str(out / "merged"), device="cpu")
    assert st.max_seq_length == MAX_LENGTH
    eos = train_side.eos_id
    assert merged.eos_id == eos and merged.prefix_ids == train_side.prefix_ids
    for instruction in (INSTRUCTION, None):  # queries (instructed) and documents
        texts = ["a cat", _exact_text(train_side, instruction), "the quick brown fox jumps " * 40]
        n = len(texts)
        collated = ContrastiveCollator(train_side, MAX_LENGTH, hard_negatives=False)(Examples(
            instruction=[instruction] * n, query=texts, positive=texts, hard_negative=[None] * n))
        training = collated.query_ids if instruction else collated.doc_ids
        served = tokenize_texts(merged, texts, instruction, MAX_LENGTH, "end")
        features = st.tokenize(format_texts(texts, instruction))
        by_st = [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]
        assert served.truncated == 1
        for i, ids in enumerate(training):
            where = f"{family}, text {i}, {'query' if instruction else 'document'}"
            assert ids[-1] == eos and eos not in ids[len(train_side.prefix_ids):-1], f"{where}: one EOS, at the end"
            assert len(ids) == (MAX_LENGTH if i else len(ids)) and len(ids) <= MAX_LENGTH, where
            assert merged.tokenize([texts[i]], instruction)[0] == ids, f"{where}: Embedder(merged) differs"
            assert served.ids[i] == ids, f"{where}: serving differs"
            assert by_st[i] == ids, f"{where}: sentence-transformers on merged/ differs: {by_st[i]} vs {ids}"


def test_serving_merged_rejects_exactly_the_over_length_input(trained):
    family, _, out = trained
    merged = Embedder.load(str(out / "merged"), max_length=MAX_LENGTH, dtype="float32")
    exact = _exact_text(merged, INSTRUCTION)
    assert tokenize_texts(merged, ["a cat", exact], INSTRUCTION, MAX_LENGTH, "reject").truncated == 0
    with pytest.raises(APIError) as err:
        tokenize_texts(merged, [exact + " word"], INSTRUCTION, MAX_LENGTH, "reject")
    assert err.value.status == 400 and "longer than" in str(err.value.message), family


def test_adapter_merged_and_sentence_transformers_embed_alike(trained):
    from sentence_transformers import SentenceTransformer

    family, base, out = trained
    texts = ["a cat sits on the mat", "the quick brown fox jumps " * 40, "word"]
    adapter = Embedder.load(str(base), adapter=str(out / "adapter"), max_length=MAX_LENGTH, dtype="float32")
    merged = Embedder.load(str(out / "merged"), max_length=MAX_LENGTH, dtype="float32")
    st = SentenceTransformer(str(out / "merged"), device="cpu")
    a = torch.from_numpy(adapter.encode(texts, INSTRUCTION))
    m = torch.from_numpy(merged.encode(texts, INSTRUCTION))
    s = torch.from_numpy(st.encode(format_texts(texts, INSTRUCTION), normalize_embeddings=True))
    assert torch.nn.functional.cosine_similarity(a, m).min() > 0.9999, family
    assert torch.nn.functional.cosine_similarity(m, s).min() > 0.9999, family
    base_only = torch.from_numpy(Embedder.load(str(base), max_length=MAX_LENGTH, dtype="float32").encode(texts, INSTRUCTION))
    assert torch.nn.functional.cosine_similarity(a, base_only).min() < 0.9999, "training changed nothing"
