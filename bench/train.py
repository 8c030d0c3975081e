"""Training throughput and peak memory: our Ray Train loop vs sentence-transformers' trainer.

Same model (gemma3-270m backbone, float32, LoRA r16 on all linear layers), same rows (Banking77 pairs
with one hard negative, see bench/quality_data.py), same batch (16 queries + 16 positives + 16 hard
negatives), same max length, same pooling (EOS appended, last-token pooling, normalised), same
temperature (0.02, i.e. MNRL scale 50), AdamW. Each side runs once, in its own process, for
STEPS steps; examples/s is batch / median step time over the steps after the first (warm-up).
Peak memory is the training process's max RSS, model load included. Default BENCH_BACKEND=local runs our
loop in one process (same code as a Ray Train worker, minus the per-step report); BENCH_BACKEND=ray goes
through Ray Train (then the RSS is the worker's).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/train.py
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

MODEL = os.environ.get("BENCH_MODEL", "gemma3-270m")
BATCH = int(os.environ.get("BENCH_BATCH", 16))
MAX_LENGTH = int(os.environ.get("BENCH_MAX_LENGTH", 64))
STEPS = int(os.environ.get("BENCH_STEPS", 5))
LR = 1e-4
TEMPERATURE = 0.02
DATA = REPO / "runs" / "quality-data" / "banking77-pairs"


def _rows(n: int) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(DATA / "part-0.parquet").slice(0, n).to_pylist()


def ours() -> dict:
    import ray

    from synthembed.train import TrainConfig, run

    tmp = REPO / "runs" / "bench-train"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    config = TrainConfig(
        model={"source": MODEL, "max_length": MAX_LENGTH},
        data=[{"path": str(DATA)}],
        lora={"r": 16, "alpha": 32, "dropout": 0.0},
        temperature=TEMPERATURE, batch_size=BATCH, max_steps=STEPS, lr=LR, warmup_steps=0, weight_decay=0.0,
        torch_threads=2, num_workers=1, checkpoint_every=1000, storage_path=str(tmp), name="ours",
        export_merged=False, mask_duplicates=False,  # MNRL does not mask; same loss on both sides
        backend=os.environ.get("BENCH_BACKEND", "local"),
    )
    if config.backend == "ray":  # run under /tmp/synthembed-ray.lock: the test fixture stops all Ray processes
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir="/tmp/synthembed-ray-benchtrain")
    out = run(config)
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    if ray.is_initialized():
        ray.shutdown()
    return {
        "step_seconds": [r["step_seconds"] for r in curve],
        "losses": [r["loss"] for r in curve],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in curve),
    }


def sentence_transformers_side() -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from sentence_transformers import (
        SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses, models,
    )
    from transformers import TrainerCallback

    from synthembed.model import format_text, resolve_model_dir
    from synthembed.train.export import tokenizer_appending_eos

    torch.set_num_threads(2)
    transformer = models.Transformer(str(resolve_model_dir(MODEL)), max_seq_length=MAX_LENGTH,
                                     model_args={"dtype": torch.float32})
    tokenizer_appending_eos(transformer.tokenizer)  # EOS appended, as in our Embedder
    transformer.tokenizer.padding_side = "right"
    dim = transformer.get_word_embedding_dimension()
    model = SentenceTransformer(modules=[transformer, models.Pooling(dim, pooling_mode="lasttoken"), models.Normalize()],
                                device="cpu")
    # transformers' add_adapter wants peft>=0.22 (0.21 here): wrap the backbone with peft directly, as we do
    from peft import get_peft_model

    model[0].auto_model = get_peft_model(
        model[0].auto_model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    )
    rows = _rows(BATCH * STEPS)
    ds = Dataset.from_dict({
        "anchor": [format_text(r["query"], r["instruction"]) for r in rows],
        "positive": [r["positive"] for r in rows],
        "negative": [r["hard_negative"] for r in rows],
    })
    loss = losses.MultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(REPO / "runs" / "bench-train" / "st"), per_device_train_batch_size=BATCH, max_steps=STEPS,
        learning_rate=LR, warmup_steps=0, weight_decay=0.0, lr_scheduler_type="linear", logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, dataloader_drop_last=True, seed=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Timer()])
    trainer.train()
    logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_seconds": times, "losses": logs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _side(name: str) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, "--side", name], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from common import spread, write_result

    if not DATA.is_dir():
        from quality_data import build

        build(DATA.parent)
    results = {}
    for name in ("ours", "sentence_transformers"):
        t0 = time.time()
        r = _side(name)
        steady = r["step_seconds"][1:] or r["step_seconds"]
        r["examples_per_s"] = BATCH / statistics.median(steady)
        r["step_seconds_steady"] = spread(steady)
        r["wall_s"] = round(time.time() - t0, 1)
        results[name] = r
    ratio = results["ours"]["examples_per_s"] / results["sentence_transformers"]["examples_per_s"]
    payload = {
        "ratio": ratio,
        "memory_ratio": results["ours"]["peak_rss_mb"] / results["sentence_transformers"]["peak_rss_mb"],
        "ours_examples_per_s": results["ours"]["examples_per_s"],
        "st_examples_per_s": results["sentence_transformers"]["examples_per_s"],
        "ours_peak_rss_mb": results["ours"]["peak_rss_mb"],
        "st_peak_rss_mb": results["sentence_transformers"]["peak_rss_mb"],
        "setup": {"model": MODEL, "batch": BATCH, "docs_per_query": 2, "max_length": MAX_LENGTH, "steps": STEPS,
                  "lora": "r16 all-linear, dropout 0", "dtype": "float32", "temperature": TEMPERATURE,
                  "st_loss": "MultipleNegativesRankingLoss(scale=50)", "ours": f"synthembed.train.run, backend {os.environ.get('BENCH_BACKEND', 'local')}, 2 threads",
                  "loadavg_at_start": os.getloadavg()},
        "sides": results,
    }
    path = write_result("train", payload)
    print(f"{'side':<24}{'examples/s':>12}{'peak RSS MB':>14}{'first loss':>12}")
    for name, r in results.items():
        print(f"{name:<24}{r['examples_per_s']:>12.2f}{r['peak_rss_mb']:>14.0f}{r['losses'][0]:>12.3f}")
    print(f"ratio (ours / ST examples/s) = {ratio:.2f}; wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--side":
        import logging

        logging.basicConfig(level=logging.WARNING)
        out = ours() if sys.argv[2] == "ours" else sentence_transformers_side()
        print(json.dumps(out))
    else:
        main()
