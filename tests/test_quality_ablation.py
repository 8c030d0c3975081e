"""bench/quality_ablation.py: each arm is the quality profile with exactly one more filter, on the same rows."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from quality_ablation import ARMS, arm_profile  # noqa: E402

from synthembed.workflow import PipelineConfig, data_passes, wire  # noqa: E402


def test_each_arm_adds_one_filter_and_reads_the_one_generation(tmp_path):
    generated = tmp_path / "generate"
    generated.mkdir()
    (generated / "manifest.json").write_text('{"fingerprint": "g"}')
    want = {"none": ["decontaminate"], "language": ["language", "decontaminate"],
            "consistency": ["language", "decontaminate", "consistency"],
            "fn_mask": ["language", "decontaminate", "consistency"],
            "hard_negatives": ["language", "decontaminate"], "no_hard_negatives": ["language", "decontaminate"],
            "same_task": ["language", "decontaminate"]}
    margins, hard_negatives, same_task = {}, {}, {}
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
        hard_negatives[arm] = config.train.hard_negatives
        same_task[arm] = config.train.same_task_batches
    assert margins == {"none": None, "language": None, "consistency": None, "fn_mask": 0.1,
                       "hard_negatives": None, "no_hard_negatives": None, "same_task": None}
    profile = yaml.safe_load((REPO / "configs" / "cpu-quality.yaml").read_text())["train"]["hard_negatives"]
    assert hard_negatives == {**{a: profile for a in ("none", "language", "consistency", "fn_mask", "same_task")},
                              "hard_negatives": True, "no_hard_negatives": False}
    assert [a for a, on in same_task.items() if on] == ["same_task"]


def test_an_arm_that_trains_what_an_earlier_one_trains_is_not_run_twice():
    from quality_ablation import same_as

    profile = yaml.safe_load((REPO / "configs" / "cpu-quality.yaml").read_text())
    off = {**profile, "train": {**profile["train"], "hard_negatives": False}}
    on = {**profile, "train": {**profile["train"], "hard_negatives": True}}
    assert same_as(list(ARMS), off) == {"no_hard_negatives": "language"}
    assert same_as(list(ARMS), on) == {"hard_negatives": "language"}
    assert same_as(["none", "consistency", "fn_mask"], off) == {}


def test_a_second_seed_trains_in_its_own_folder_with_that_seed(tmp_path):
    from quality_ablation import arm_root, over_seeds

    generated = tmp_path / "generate"
    generated.mkdir()
    out = tmp_path / "ablation"
    assert arm_root(out, "none", 0) == out / "none" and arm_root(out, "none", 2) == out / "none-seed2"
    profile = arm_profile("none", arm_root(out, "none", 2), generated, None, seed=2)
    config = PipelineConfig.model_validate(yaml.safe_load(profile.read_text()))
    assert config.train.seed == 2 and config.output_root == str(out / "none-seed2")
    spread = over_seeds({0: {"tuned": {"sts": 70.0, "only0": 1.0}}, 2: {"tuned": {"sts": 50.0}}})
    assert spread == {"sts": {"mean": 60.0, "min": 50.0, "max": 70.0, "by_seed": {0: 70.0, 2: 50.0}}}


def test_an_ablation_is_attached_only_to_the_rows_it_trained_on(tmp_path):
    import json

    from quality import _ablation

    generated = tmp_path / "generate"
    generated.mkdir()
    (generated / "manifest.json").write_text('{"fingerprint": "rows-of-run-1"}')
    result = tmp_path / "quality_ablation.json"
    ablation = {"arms": {"none": {}}, "arm_settings": {}, "evaluation": "subsets", "epochs": 3}
    result.write_text(json.dumps({**ablation, "generated_fingerprint": "rows-of-run-1"}))
    assert _ablation(generated, result) == ablation
    # the folder grew (or was regenerated) since: the same name, other rows; the old ablation does not describe it
    (generated / "manifest.json").write_text('{"fingerprint": "rows-of-run-2"}')
    assert _ablation(generated, result) is None
    assert _ablation(generated, tmp_path / "missing.json") is None


def test_arms_trained_on_an_earlier_state_of_the_rows_are_left_out(tmp_path, capsys):
    import json

    from quality_ablation import collect_arms, mark_trained_on

    generated = tmp_path / "generate"
    out = tmp_path / "ablation"

    def finished_arm(root: Path, stsb: float, rows: str | None) -> None:
        for side, score in (("base", 20.0), ("tuned", stsb)):
            (root / "evaluate" / side).mkdir(parents=True)
            (root / "evaluate" / side / "manifest.json").write_text(json.dumps(
                {"scores": [{"task": "STSBenchmark", "subset": "default", "score": score, "protocol": None}]}))
        (root / "train").mkdir()
        (root / "train" / "manifest.json").write_text('{"examples": 10, "steps": 2}')
        if rows is not None:
            mark_trained_on(root, rows)

    finished_arm(out / "none", 60.0, "rows-now")
    finished_arm(out / "none-seed1", 70.0, "rows-now")
    finished_arm(out / "language", 99.0, "rows-before-the-folder-grew")
    finished_arm(out / "consistency", 98.0, None)  # finished before arms were marked
    results = collect_arms(out, generated, "rows-now")
    assert set(results) == {"none"}
    assert results["none"]["tuned_over_seeds"]["STSBenchmark"]["by_seed"] == {0: 60.0, 1: 70.0}
    said = capsys.readouterr().out
    assert "left out" in said and "--arms language" in said and "--arms consistency" in said


def test_a_set_override_reaches_every_arm_profile(tmp_path):
    generated = tmp_path / "generate"
    generated.mkdir()
    for arm in ("none", "fn_mask"):
        profile = arm_profile(arm, tmp_path / arm, generated, 1, sets=["train.compile=false"])
        config = PipelineConfig.model_validate(yaml.safe_load(profile.read_text()))
        assert config.train.compile is False and config.train.epochs == 1
    assert config.train.false_negative_margin == 0.1, "the override replaced the arm's own setting"
