"""Build the labeled training data of the quality run (bench/results/quality.json), in the data-contract schema.

Offline, the only training-split text here is Banking77 train (10,003 English banking questions, 77 intents)
and 6 GPT-4o retrieval triplets (../shared/data/synthetic_reference). From them:
- banking77-pairs: short_short "semantically similar" pairs: two different questions with the same intent,
  hard negative a question of another intent (STS-like supervision);
- banking77-labels: long_short classification rows, query -> intent name (label strings repeat in a
  batch: this is what duplicate masking is for);
- gpt4o-retrieval: the 6 reference triplets (short_long).
None of the evaluation test sets (STSb, SciFact, Tatoeba) is used for training.

    .venv/bin/python bench/quality_data.py runs/quality-data
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _row(task_type, instruction, query, positive, hard_negative, language="English", generator="labeled"):
    rid = hashlib.sha256(f"{task_type}|{instruction}|{query}|{positive}|{hard_negative}".encode()).hexdigest()[:16]
    return {"id": rid, "task_type": task_type, "instruction": instruction, "query": query, "positive": positive,
            "hard_negative": hard_negative, "language": language, "generator": generator}


def build(out: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    with gzip.open(DATA / "banking77" / "train.csv.gz", "rt", encoding="utf-8") as f:
        bank = [(r["text"].strip(), r["category"]) for r in csv.DictReader(f)]
    by_label: dict[str, list[str]] = {}
    for text, label in bank:
        by_label.setdefault(label, []).append(text)
    labels = sorted(by_label)
    pairs, label_rows = [], []
    for text, label in bank:
        other = rng.choice([t for t in by_label[label] if t != text])
        neg_label = rng.choice([x for x in labels if x != label])
        pairs.append(_row("short_short", "Retrieve semantically similar text.", text, other, rng.choice(by_label[neg_label])))
        label_rows.append(_row("long_short", "Given an online banking query, find the corresponding intent",
                               text, label.replace("_", " "), neg_label.replace("_", " ")))
    with gzip.open(DATA / "synthetic_reference" / "camel_gpt4o_retrieval.jsonl.gz", "rt", encoding="utf-8") as f:
        ref = [json.loads(line) for line in f]
    gpt = [_row("short_long", r["task"], r["user_query"], r["positive_document"], r["hard_negative_document"],
                generator=r.get("generator", "gpt-4o")) for r in ref]
    counts = {}
    for name, rows in {"banking77-pairs": pairs, "banking77-labels": label_rows, "gpt4o-retrieval": gpt}.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out / name / "part-0.parquet")
        counts[name] = len(rows)
    return counts


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quality-data")))
