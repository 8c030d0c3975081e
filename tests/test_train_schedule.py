"""The training plan: computed before compute, broken schedules refused by `--check`, the lr curve pinned."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml

from conftest import REPO, VENV_BIN
from synthembed.train.config import TrainConfig
from synthembed.train.schedule import estimate_memory_gib, lr_at, make_scheduler, plan_training, warmup_of
from train_helpers import toy_rows, write_examples


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "python"), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_old_gpu_1node_schedule_fails_check(tmp_path):
    profile = yaml.safe_load((REPO / "configs" / "gpu-1node.yaml").read_text())
    # what gpu-1node.yaml shipped: 20,000 requests, batch 2048, 100 warm-up steps = a run of warm-up only
    profile["generate"]["num_examples"] = 20000
    profile["train"].update(batch_size=2048, warmup_steps=100)
    profile["train"].pop("warmup_ratio")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(profile))
    res = _check("jobs/pipeline.py", "--config", str(path), "--check")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "warm-up (100 steps) covers the whole run (9 steps)" in res.stderr
    assert "train.warmup_ratio" in res.stderr and "train.allow_unusual_schedule" in res.stderr
    ok = _check("jobs/pipeline.py", "--config", str(path), "--check", "--set", "train.allow_unusual_schedule=true")
    assert ok.returncode == 0 and "PROBLEM: warm-up" in ok.stdout, "the explicit override keeps it possible"


PIPELINE_PROFILES = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if "train:" in p.read_text())


def test_pipeline_profiles_are_found():
    assert {"cpu-tiny.yaml", "gpu-1node.yaml", "gpu-multinode.yaml"} <= set(PIPELINE_PROFILES)


@pytest.mark.parametrize("profile", PIPELINE_PROFILES)
def test_every_shipped_profile_has_a_sane_plan(profile):
    res = _check("jobs/pipeline.py", "--config", f"configs/{profile}", "--check")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "config OK" in res.stdout and "train plan:" in res.stdout and "PROBLEM" not in res.stdout


def test_train_check_counts_the_real_data(tmp_path):
    data = write_examples(tmp_path / "d.parquet", toy_rows(24))
    base = ["jobs/train.py", "--set", f"data=[{{path: {data}}}]", "--set", "model.source=tiny-llama", "--check"]
    res = _check(*base, "--set", "batch_size=8", "--set", "epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "24 examples" in res.stdout and "6 steps in all, 1 warm-up" in res.stdout
    res = _check(*base, "--set", "batch_size=32")
    assert res.returncode == 2 and "train.batch_size (32) is larger than the data (24 examples" in res.stderr


def test_warmup_ratio_gives_the_expected_lr_at_start_peak_and_end():
    cfg = TrainConfig(warmup_ratio=0.1)
    total = 50
    warmup = warmup_of(cfg, total)
    assert warmup == 5
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = make_scheduler(opt, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4 / 5), "step 0 already learns (it ran at lr 0 before)"
    assert lrs[4] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-4), "the peak is train.lr"
    assert lrs[5] == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(1e-4 / 45) and min(lrs) > 0, "the last step decays but is not wasted"
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:5])) and all(a > b for a, b in zip(lrs[5:], lrs[6:]))
    # without warm-up it is transformers' linear schedule, step for step
    from transformers import get_linear_schedule_with_warmup

    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_linear_schedule_with_warmup(opt2, 0, total)
    for s in range(total):
        assert hf.get_last_lr()[0] == pytest.approx(lr_at(s, 0, total))
        opt2.step()
        hf.step()


def test_warmup_steps_and_ratio_together_are_refused():
    with pytest.raises(ValueError, match="warmup_steps or train.warmup_ratio"):
        TrainConfig(warmup_steps=10, warmup_ratio=0.1)


def test_memory_estimate_of_a_mistral_7b_worker(tmp_path):
    from transformers import MistralConfig

    MistralConfig().save_pretrained(tmp_path / "mistral")  # the defaults are Mistral 7B's dims, no weights
    cfg = TrainConfig(model={"source": str(tmp_path / "mistral"), "max_length": 512}, batch_size=1024,
                      num_workers=8, chunk_size=32, gradient_checkpointing=True, precision="bf16", use_gpu=True)
    gib, note = estimate_memory_gib(cfg)
    assert "7.1" in note and "bf16" in note  # 7.1B parameters without the LM head
    assert 14 < gib < 40, gib  # 13.2 GiB of bf16 weights plus LoRA state and one chunk's activations
    no_ckpt, _ = estimate_memory_gib(cfg.model_copy(update={"gradient_checkpointing": False}))
    assert no_ckpt > gib
    plan = plan_training(cfg, 200_000)
    assert plan.total_steps == 195 and plan.warmup_steps == 20 and not plan.problems
    assert plan.memory_per_worker_gib == gib
