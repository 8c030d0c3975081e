"""bench/quality_ablation.py: each arm is the quality profile with exactly one more filter, on the same rows."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from quality_ablation import ARMS, arm_profile  # noqa: E402

from synthembed.workflow import PipelineConfig, data_passes, wire  # noqa: E402


def test_each_arm_adds_one_filter_and_reads_the_one_generation(tmp_path):
    generated = tmp_path / "generate"
    generated.mkdir()
    (generated / "manifest.json").write_text('{"fingerprint": "g"}')
    want = {"none": ["decontaminate"], "language": ["language", "decontaminate"],
            "consistency": ["language", "decontaminate", "consistency"],
            "fn_mask": ["language", "decontaminate", "consistency"]}
    margins = {}
    for arm in ARMS:
        root = tmp_path / "ablation" / arm
        config = PipelineConfig.model_validate(yaml.safe_load(arm_profile(arm, root, generated, None).read_text()))
        assert data_passes(config) == want[arm], arm
        assert config.stages == ["train", "evaluate"] and config.generate.language_check == "flag"
        assert (root / "generate").resolve() == generated.resolve()  # every arm trains on the same rows
        assert all(t.limit for t in config.evaluate.tasks if t.path and "tatoeba" in t.path)  # subsets
        wired = wire(config)
        assert Path(wired.train.data[0].path) == root.resolve() / want[arm][-1]
        assert [d.path for d in wired.train.data[1:]] == []  # the quality profile's own data entry is dropped
        margins[arm] = config.train.false_negative_margin
    assert margins == {"none": None, "language": None, "consistency": None, "fn_mask": 0.1}
