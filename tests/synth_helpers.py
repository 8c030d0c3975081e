"""Small generation configs for the synth tests: the packaged SmolLM2 behind llama.cpp, short fields."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from synthembed.synth import GenerateConfig
from synthembed.synth.ledger import Ledger

SMALL_LENGTHS = {"short_min": 1, "short_max": 60, "long_min": 20, "long_max": 160}


def engine(name: str, **kw) -> dict:
    base = {"kind": "embedded", "name": name, "model": "smollm2-135m", "batch_size": 4, "n_threads": 2,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 300, "repetition_penalty": 1.1}}
    return {**base, **kw}


def config(out: Path, languages: tuple[str, ...], **kw) -> GenerateConfig:
    base = dict(output_dir=str(out), num_examples=6, seed=0, language_weights={lang: 1.0 for lang in languages},
                tasks_per_brainstorm=3, examples_per_task=1, lengths=SMALL_LENGTHS, brainstorm_max_chars=100,
                commit_every=4, engine=engine("embedded"), fallback=None,
                # the 135M test model writes many languages in English; these tests check structure, not language
                language_check="flag")
    return GenerateConfig.model_validate({**base, **kw})


def resolved(out: Path) -> tuple[list[str], list[dict], list[dict]]:
    """Every planned request ends exactly once (one example, or a final reject) and example ids are unique.

    Returns the plan's request ids, the examples and the rejects.
    """
    plan = pq.read_table(out / "plan.parquet").column("request_id").to_pylist()
    ledger = Ledger(out)
    ex, rj = ledger.outcomes("example").to_pylist(), ledger.rejects().to_pylist()
    ex_rids = [r["request_id"] for r in ex]
    assert len(ex_rids) == len(set(ex_rids)), "a request produced two examples"
    ids = [r["id"] for r in ex]
    assert len(ids) == len(set(ids)), "duplicate example ids were kept"
    final = {r["request_id"] for r in rj if r["stage"] == "example" and not r["retry_next"]}
    assert set(ex_rids).isdisjoint(final)
    assert set(ex_rids) | final == set(plan)
    for r in rj:
        assert r["reason"] and r["generator"]
        assert r["raw"] is not None  # raw output (or the error body) is kept
    return plan, ex, rj
