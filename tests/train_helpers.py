"""Helpers for the training tests: small Parquet files in the data-contract schema."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = [
    ("cats", "Cats are small domestic felines that purr.", "Dogs bark and fetch sticks."),
    ("rain", "Rain is water falling from clouds.", "Deserts get very little snow."),
    ("bread", "Bread is baked from flour, water and yeast.", "Pasta is boiled in salted water."),
    ("moon", "The moon orbits the earth every 27 days.", "Mars has two small moons."),
    ("piano", "A piano has 88 black and white keys.", "A violin has four strings."),
    ("coffee", "Coffee is brewed from roasted beans.", "Tea leaves are steeped in hot water."),
    ("trains", "Trains run on steel rails between stations.", "Planes fly between airports."),
    ("apples", "Apples grow on trees and are often red.", "Bananas are long yellow fruit."),
    ("chess", "Chess is a board game with kings and pawns.", "Poker is a card game with bets."),
    ("ocean", "The ocean covers most of the planet's surface.", "Lakes are bodies of fresh water."),
    ("python", "Python is a programming language.", "A python is also a large snake."),
    ("snow", "Snow forms from frozen water vapour.", "Hail is balls of ice."),
]


def toy_rows(n: int, with_negatives: bool = True, label_positives: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        topic, pos, neg = TOPICS[i % len(TOPICS)]
        query = f"what about {topic}? ({i})"
        positive = topic if label_positives else pos
        hard_negative = neg if with_negatives and i % 3 != 2 else None  # some rows lack a hard negative
        rows.append({
            "id": hashlib.sha1(f"{query}|{positive}".encode()).hexdigest()[:16],
            "task_type": "short_long",
            "instruction": "Given a question, retrieve a passage that answers it",
            "query": query,
            "positive": positive,
            "hard_negative": hard_negative,
            "language": "English",
        })
    return rows


def write_examples(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def randomize_lora_b(model, seed: int = 1) -> None:
    """peft initialises lora_B to zero, which makes every lora_A gradient zero: use random B so a
    gradient comparison covers all LoRA weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def loss_and_grads(config_dump: dict, rows: list[dict], chunk_sizes: list) -> list[tuple[float, list]]:
    """Build the LoRA model (seeded), embed this worker's rows, return (loss, summed grads) per chunk size.

    Runs in-process (world size 1) or inside a Ray Train worker (rows = this worker's slice).
    """
    import torch

    from synthembed.train import InfoNCELoss, TrainConfig
    from synthembed.train.data import ContrastiveCollator, Examples
    from synthembed.train.distributed import all_reduce_grads
    from synthembed.train.gradcache import ContrastiveStep
    from synthembed.train.lora import build_lora_embedder, make_embed_fn, trainable_parameters

    config = TrainConfig.model_validate(config_dump)
    torch.manual_seed(0)
    emb = build_lora_embedder(config, torch.device("cpu"))
    randomize_lora_b(emb.model)
    params = trainable_parameters(emb.model)
    batch = ContrastiveCollator(emb, config.model.max_length)(Examples(
        [r["instruction"] for r in rows], [r["query"] for r in rows], [r["positive"] for r in rows],
        [r["hard_negative"] for r in rows],
    ))
    out = []
    for chunk in chunk_sizes:
        for p in params:
            p.grad = None
        step = ContrastiveStep(make_embed_fn(emb, None), InfoNCELoss(config.temperature, config.mask_duplicates), chunk)
        loss = step(batch)
        all_reduce_grads(params)
        out.append((loss, [p.grad.detach().clone() for p in params]))
    return out


def gather_test_loop(cfg: dict) -> None:
    """Ray Train worker: this rank's contiguous share of the rows, gathered negatives; rank 0 saves."""
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    share = len(cfg["rows"]) // size
    rows = cfg["rows"][rank * share : (rank + 1) * share]
    results = loss_and_grads(cfg["train"], rows, cfg["chunk_sizes"])
    if rank == 0:
        torch.save(results, cfg["out"])
    if cfg.get("nodes_out"):  # where each rank ran
        Path(f"{cfg['nodes_out']}.{rank}").write_text(ray.get_runtime_context().get_node_id())
    ray.train.report({"loss": results[0][0]})
