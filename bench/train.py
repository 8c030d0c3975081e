"""Training throughput and peak memory: our training loop vs sentence-transformers' trainer.

Same model (gemma3-270m backbone, float32 or bf16 per side, LoRA r16 on all linear layers, dropout 0), same rows in the
same batches (our first STEPS global batches of Banking77 pairs with one hard negative, see
bench/quality_data.py; the sentence-transformers side reads them in order), same batch (16 queries +
16 positives + 16 hard negatives), same max length, same pooling (EOS appended, last-token pooling,
normalised), same temperature (0.02 = MNRL scale 50), AdamW, no duplicate masking (MNRL has none).
LoRA B starts at zero, so step 1 is the base model on the same batch on every side: the recorded
first losses must agree, which shows the sides compute the same thing.

Sides (each once, in its own process, STEPS steps; examples/s = batch / median step time after WARMUP):
  ours              synthembed.train (micro_batch_size 8: length-sorted forward passes)
  ours_ray_train    ours through Ray Train (TorchTrainer, 1 worker, per-step ray.train.report; RSS of the worker)
  ours_one_pass     the same loop with micro_batch_size None (one padded pass): the ablation
  ours_gradcache    the same loop with GradCache chunks of 8 (length-sorted): the low-memory setting
  st_mnrl           SentenceTransformerTrainer + MultipleNegativesRankingLoss
  st_cached_mnrl    SentenceTransformerTrainer + CachedMultipleNegativesRankingLoss(mini_batch_size 8)
  ours_bf16         `ours` with precision bf16: base weights in bf16, bf16 autocast, LoRA weights and AdamW in fp32
  ours_bf16_compile `ours_bf16` with train.compile (empty inductor cache: its first step includes the compile,
                    reported as first_step_extra_seconds; break-even = that / the seconds a step saves)
  st_mnrl_bf16      `st_mnrl` with the base loaded in bf16 and the trainer's bf16 autocast (LoRA kept fp32 by peft)
Each side also reports its fraction of the matmul roofline in its dtype (bench/roofline.py: a LoRA step's
useful work is 2x the forward FLOP of the step's tokens), measured in this process around the side.
Peak memory is the process's max RSS, model load included. `ours` runs the Ray Train worker's loop in
one process (backend local), `ours_ray_train` the same loop under Ray Train in a private local Ray
instance (run it under /tmp/synthembed-ray.lock: the test fixture stops every Ray process).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/train.py
    BENCH_SIDES=ours,ours_bf16_compile,st_mnrl_bf16 BENCH_COMPILED_MICRO_BATCH=16 BENCH_NAME=train_compile_micro16 \
      flock /tmp/synthembed-bench.lock .venv/bin/python bench/train.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

MODEL = os.environ.get("BENCH_MODEL", "gemma3-270m")
BATCH = int(os.environ.get("BENCH_BATCH", 16))
MAX_LENGTH = int(os.environ.get("BENCH_MAX_LENGTH", 64))
STEPS = int(os.environ.get("BENCH_STEPS", 12))
DEFAULT_SIDES = ("ours", "ours_bf16", "ours_bf16_compile", "st_mnrl", "st_mnrl_bf16", "ours_ray_train", "ours_one_pass",
                 "ours_gradcache", "st_cached_mnrl")
BF16_SIDES = ("ours_bf16", "ours_bf16_compile", "st_mnrl_bf16")
SIDES = os.environ.get("BENCH_SIDES", ",".join(DEFAULT_SIDES)).split(",")
# AMX runs bf16 matmuls of 256 rows at 0.6 of its square-matmul rate and of 2048 at 1.08 (matmul_shapes.json):
# the compiled bf16 side may take larger micro-batches than the fp32 sides' best (8)
COMPILED_MICRO_BATCH = int(os.environ.get("BENCH_COMPILED_MICRO_BATCH", 8))
NAME = os.environ.get("BENCH_NAME", "train")  # results file: bench/results/<NAME>.json
# (our side, peer side, json key of the throughput ratio, json key of the peak-memory ratio)
COMPARISONS = (
    ("ours", "st_mnrl", "ratio", "memory_ratio"),
    ("ours_ray_train", "st_mnrl", "ray_train_ratio", "ray_train_memory_ratio"),
    ("ours", "st_cached_mnrl", "ratio_vs_cached", "memory_ratio_vs_cached"),
    ("ours_gradcache", "st_cached_mnrl", "gradcache_ratio_vs_cached", "gradcache_memory_ratio_vs_cached"),
    ("ours_bf16", "st_mnrl_bf16", "bf16_ratio", "bf16_memory_ratio"),
    ("ours_bf16", "ours", "ours_bf16_vs_ours_fp32", "ours_bf16_memory_vs_fp32"),
    ("ours_bf16_compile", "st_mnrl_bf16", "compiled_bf16_ratio", "compiled_bf16_memory_ratio"),
    ("ours_bf16_compile", "ours", "compiled_bf16_vs_ours_fp32", "compiled_bf16_memory_vs_fp32"),
)
WARMUP = 2  # steps left out of the median: allocator and thread-pool warm-up
MINI_BATCH = 8
LR = 1e-4
TEMPERATURE = 0.02
DATA = REPO / "runs" / "quality-data" / "banking77-pairs"
WORK = REPO / "runs" / "bench-train"


def _rows_in_our_order() -> list[dict]:
    """The rows of our first STEPS global batches, in order: every side then sees identical batches."""
    from synthembed.train.config import DataSource
    from synthembed.train.data import BatchPlan, mix_sources

    examples = mix_sources([DataSource(path=str(DATA))], seed=0)
    plan = BatchPlan(len(examples), BATCH, 1, seed=0, max_steps=STEPS)
    taken = examples.take([i for step in range(STEPS) for i in plan.indices(step)])
    return [{"instruction": i, "query": q, "positive": p, "hard_negative": h}
            for i, q, p, h in zip(taken.instruction, taken.query, taken.positive, taken.hard_negative)]


def _sequential_batches(dataset, **kwargs):
    """sentence-transformers batch sampler without shuffling (the rows are already in our batch order)."""
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import SequentialSampler

    kwargs.pop("generator", None)
    return DefaultBatchSampler(SequentialSampler(dataset), **kwargs)


def ours(micro_batch_size: int | None, chunk_size: int | None = None, backend: str = "local",
         precision: str = "float32", compile: bool = False) -> dict:
    import ray

    from synthembed.train import TrainConfig, run

    shutil.rmtree(WORK / "ours", ignore_errors=True)
    config = TrainConfig(
        model={"source": MODEL, "max_length": MAX_LENGTH},
        data=[{"path": str(DATA)}],
        lora={"r": 16, "alpha": 32, "dropout": 0.0},
        temperature=TEMPERATURE, batch_size=BATCH, max_steps=STEPS, lr=LR, warmup_steps=0, weight_decay=0.0,
        micro_batch_size=micro_batch_size, chunk_size=chunk_size,
        torch_threads=2, num_workers=1, checkpoint_every=1000, storage_path=str(WORK), name="ours",
        export_merged=False, mask_duplicates=False,
        backend=backend, precision=precision, compile=compile,
    )
    if config.backend == "ray":
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


def sentence_transformers_side(cached: bool, bf16: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import (
        SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses, models,
    )
    from transformers import TrainerCallback

    from synthembed.model import format_text, resolve_model_dir
    from synthembed.train.export import tokenizer_appending_eos

    torch.set_num_threads(2)
    transformer = models.Transformer(str(resolve_model_dir(MODEL)), max_seq_length=MAX_LENGTH,
                                     model_kwargs={"dtype": torch.bfloat16 if bf16 else torch.float32})
    tokenizer_appending_eos(transformer.tokenizer)  # EOS appended, as in our Embedder
    transformer.tokenizer.padding_side = "right"
    dim = transformer.get_word_embedding_dimension()
    model = SentenceTransformer(modules=[transformer, models.Pooling(dim, pooling_mode="lasttoken"), models.Normalize()],
                                device="cpu")
    # transformers' add_adapter wants peft>=0.22 (0.21 here): wrap the backbone with peft directly, as we do
    model[0].auto_model = get_peft_model(
        model[0].auto_model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    )
    rows = _rows_in_our_order()
    ds = Dataset.from_dict({
        "anchor": [format_text(r["query"], r["instruction"]) for r in rows],
        "positive": [r["positive"] for r in rows],
        "negative": [r["hard_negative"] for r in rows],
    })
    if cached:
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE, mini_batch_size=MINI_BATCH)
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(WORK / "st"), per_device_train_batch_size=BATCH, max_steps=STEPS,
        learning_rate=LR, warmup_steps=0, weight_decay=0.0, lr_scheduler_type="linear", logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, dataloader_drop_last=True, seed=0, bf16=bf16,
        batch_sampler=_sequential_batches,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Timer()])
    trainer.train()
    logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_seconds": times, "losses": logs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _step_flop_per_example() -> float:
    """Useful FLOP per training example (query + positive + hard negative): 2x their forward FLOP."""
    from roofline import forward_flop_per_token

    from synthembed.model import Embedder, format_text

    emb = Embedder.load(MODEL, max_length=MAX_LENGTH, dtype="float32")
    rows = _rows_in_our_order()
    texts = [format_text(r["query"], r["instruction"]) for r in rows] + [r["positive"] for r in rows] + \
        [r["hard_negative"] for r in rows]
    lengths = [len(ids) for ids in emb.tokenize(texts)]
    return 2 * forward_flop_per_token(emb.model, lengths) * sum(lengths) / len(rows)


def run_side(name: str) -> dict:
    if name == "ours":
        return ours(micro_batch_size=MINI_BATCH)
    if name == "ours_ray_train":
        return ours(micro_batch_size=MINI_BATCH, backend="ray")
    if name == "ours_bf16":
        return ours(micro_batch_size=MINI_BATCH, precision="bf16")
    if name == "ours_bf16_compile":
        return ours(micro_batch_size=COMPILED_MICRO_BATCH, precision="bf16", compile=True)
    if name == "ours_one_pass":
        return ours(micro_batch_size=None)
    if name == "ours_gradcache":
        return ours(micro_batch_size=None, chunk_size=MINI_BATCH)
    if name in ("st_mnrl", "st_cached_mnrl", "st_mnrl_bf16"):
        return sentence_transformers_side(cached=name == "st_cached_mnrl", bf16=name == "st_mnrl_bf16")
    raise SystemExit(f"unknown side {name!r}; BENCH_SIDES takes {', '.join(DEFAULT_SIDES)}")


def _side_in_subprocess(name: str) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as inductor_cache:
        # an empty inductor cache: the compiled side's first step pays the compile a fresh machine pays
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache
        proc = subprocess.run([sys.executable, __file__, "--side", name], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from common import spread, write_result
    from roofline import matmul_flop_per_s, roofline

    if not DATA.is_dir():
        from quality_data import build

        build(DATA.parent)
    load_start = os.getloadavg()
    import torch

    torch.set_num_threads(2)  # as every side
    flop_per_example = _step_flop_per_example()
    results = {}
    for name in SIDES:
        dtype = "bfloat16" if name in BF16_SIDES else "float32"
        before = matmul_flop_per_s(dtype)
        t0 = time.time()
        r = _side_in_subprocess(name)
        r["wall_s"] = round(time.time() - t0, 1)
        after = matmul_flop_per_s(dtype)
        steady = r["step_seconds"][WARMUP:] or r["step_seconds"]
        # the first step's time beyond a steady one: the compile (ours_bf16_compile), else warm-up
        r["first_step_extra_seconds"] = round(r["step_seconds"][0] - statistics.median(steady), 1)
        r["examples_per_s"] = BATCH / statistics.median(steady)
        r["step_seconds_steady"] = spread(steady)
        peak = {**before, "flop_per_s": (before["flop_per_s"] + after["flop_per_s"]) / 2}
        r["roofline"] = roofline(r["examples_per_s"], flop_per_example, peak)
        r["roofline"]["flop_per_example"] = r["roofline"].pop("flop_per_token")
        results[name] = r
        print(f"{name}: {r['examples_per_s']:.2f} examples/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"roofline fraction {r['roofline']['fraction_of_roofline']:.2f} ({dtype})", flush=True)
    payload = {"first_loss": {name: r["losses"][0] for name, r in results.items()}}
    for ours_side, peer, speed_key, memory_key in COMPARISONS:
        if ours_side in results and peer in results:
            a, b = results[ours_side], results[peer]
            payload[speed_key] = a["examples_per_s"] / b["examples_per_s"]
            payload[memory_key] = a["peak_rss_mb"] / b["peak_rss_mb"]
    if "ratio" in payload:
        payload.update({
            "ours_examples_per_s": results["ours"]["examples_per_s"],
            "st_examples_per_s": results["st_mnrl"]["examples_per_s"],
            "ours_peak_rss_mb": results["ours"]["peak_rss_mb"],
            "st_peak_rss_mb": results["st_mnrl"]["peak_rss_mb"],
        })
    payload["setup"] = {
        "model": MODEL, "batch": BATCH, "docs_per_query": 2, "max_length": MAX_LENGTH, "steps": STEPS,
        "warmup_steps_excluded": WARMUP, "lora": "r16 all-linear, dropout 0",
        "dtype": {name: "bfloat16" if name in BF16_SIDES else "float32" for name in results},
        "temperature": TEMPERATURE, "mini_batch": MINI_BATCH, "compiled_micro_batch": COMPILED_MICRO_BATCH, "data": "Banking77 pairs + hard negative",
        "torch_threads": 2, "loadavg_at_start": load_start,
    }
    payload["sides"] = results
    path = write_result(NAME, payload)
    print(f"\n{'side':<18}{'examples/s':>12}{'step s (min-max)':>20}{'peak RSS MB':>13}{'first loss':>12}")
    for name, r in results.items():
        s = r["step_seconds_steady"]
        print(f"{name:<18}{r['examples_per_s']:>12.2f}{s['min']:>10.2f}-{s['max']:<9.2f}{r['peak_rss_mb']:>13.0f}{r['losses'][0]:>12.4f}")
    for ours_side, peer, speed_key, memory_key in COMPARISONS:
        if speed_key in payload:
            print(f"{ours_side} / {peer}: {payload[speed_key]:.2f}x examples/s at {payload[memory_key]:.2f}x peak memory")
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--side":
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(run_side(sys.argv[2])))
    else:
        main()
