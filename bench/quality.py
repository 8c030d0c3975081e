"""Quality run: fine-tune the embedded Gemma 3 270M with LoRA + InfoNCE and score base vs tuned.

    .venv/bin/python bench/quality.py train   # ~15 min on 2 busy cores (QUALITY_BACKEND=ray: under the Ray lock)
    flock /tmp/synthembed-bench.lock .venv/bin/python bench/quality.py eval    # base vs tuned

Training data: bench/quality_data.py (Banking77 train pairs/labels + 6 GPT-4o retrieval triplets); no
evaluation test set is trained on. The recorded run used backend "local" (the same train loop in
one process, no Ray): the machine-wide Ray lock was queued for 15+ minutes and a private Ray instance
is killed by the test fixture's `ray stop --force` (that happened to the first attempt).
QUALITY_BACKEND=ray runs it through Ray Train (1 worker, 2 threads) in a private local Ray instance.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
RUNS = REPO / "runs"
RUN_NAME = "quality-gemma3-270m"


def train_config():
    from synthembed.train import TrainConfig

    data = RUNS / "quality-data"
    return TrainConfig(
        model={"source": "gemma3-270m", "max_length": 48},
        data=[
            {"path": str(data / "banking77-pairs"), "ratio": 0.25},
            {"path": str(data / "banking77-labels"), "ratio": 0.1},
            {"path": str(data / "gpt4o-retrieval"), "ratio": 5},
        ],
        lora={"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": "all-linear"},
        batch_size=16, max_steps=int(os.environ.get("QUALITY_STEPS", 5)), lr=3e-4, warmup_steps=int(os.environ.get("QUALITY_WARMUP", 0)),
        weight_decay=0.1, torch_threads=2, num_workers=1, checkpoint_every=5,
        storage_path=str(RUNS), name=RUN_NAME, backend=os.environ.get("QUALITY_BACKEND", "local"),
    )


def train() -> Path:
    import ray

    from quality_data import build
    from synthembed.train import run

    if not (RUNS / "quality-data" / "banking77-pairs").is_dir():
        print(build(RUNS / "quality-data"))
    config = train_config()
    if config.backend == "ray":
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir="/tmp/synthembed-ray-quality")
    return run(config)


# ----------------------------------------------------------------------------------- minimal evaluation
# Our own small, clearly-labelled evaluation (the evaluation issue's job was still busy with the base model
# on the shared CPU): subsets of the shared test sets, same subsets and instructions for base and tuned.
SHARED = REPO.parent / "shared" / "data"
STS_INST = "Retrieve semantically similar text."
BITEXT_INST = "Retrieve parallel sentences."
SCIFACT_INST = "Given a scientific claim, retrieve documents that support or refute the claim"
N_STS, N_STS_ML, ML_LANGS = 400, 150, ["de", "es", "fr", "zh"]
N_SCIFACT_Q, N_SCIFACT_DOCS, N_TATOEBA, TATOEBA = 60, 240, 150, ["deu", "fra", "cmn"]


def _sts_pairs(lang: str, n: int):
    import csv
    import gzip

    with gzip.open(SHARED / "stsb_multi_mt" / f"stsb-{lang}-test.csv.gz", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f)][:n]
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]


def _sts(emb, lang, n):
    import numpy as np
    from scipy.stats import spearmanr

    a, b, gold = _sts_pairs(lang, n)
    ea, eb = emb.encode(a, instruction=STS_INST), emb.encode(b, instruction=STS_INST)
    return 100 * spearmanr((ea * eb).sum(1), gold).statistic


def _scifact(emb):
    import gzip
    import random

    import numpy as np

    qrels = {}
    for line in (SHARED / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, set()).add(d)
    with gzip.open(SHARED / "scifact" / "queries.jsonl.gz", "rt") as f:
        queries = [json.loads(x) for x in f if json.loads(x)["_id"] in qrels][:N_SCIFACT_Q]
    with gzip.open(SHARED / "scifact" / "corpus.jsonl.gz", "rt") as f:
        corpus = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in map(json.loads, f)}
    keep = sorted({d for q in queries for d in qrels[q["_id"]]})
    others = sorted(set(corpus) - set(keep))
    keep += random.Random(0).sample(others, max(0, N_SCIFACT_DOCS - len(keep)))
    eq = emb.encode([q["text"] for q in queries], instruction=SCIFACT_INST)
    ed = emb.encode([corpus[d] for d in keep], max_length=128)
    scores = eq @ ed.T
    ndcg = []
    for i, q in enumerate(queries):
        top = np.argsort(-scores[i])[:10]
        rel = qrels[q["_id"]]
        dcg = sum(1 / np.log2(r + 2) for r, j in enumerate(top) if keep[j] in rel)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(rel), 10)))
        ndcg.append(dcg / idcg)
    return 100 * float(np.mean(ndcg))


def _tatoeba(emb, lang):
    import gzip

    import numpy as np

    def read(side):
        with gzip.open(SHARED / "tatoeba" / f"tatoeba.{lang}-eng.{side}.gz", "rt", encoding="utf-8") as f:
            return [x.rstrip("\n") for x in f][:N_TATOEBA]

    src, eng = read(lang), read("eng")
    es, ee = emb.encode(src, instruction=BITEXT_INST), emb.encode(eng, instruction=BITEXT_INST)
    # one gold target per source: mteb's F1 of nearest-neighbour mining equals accuracy here
    return 100 * float(np.mean((es @ ee.T).argmax(1) == np.arange(len(src))))


def evaluate_model(source: str) -> dict:
    import time

    from synthembed.model import Embedder

    t0 = time.time()
    emb = Embedder.load(source, max_length=64, batch_size=32)
    ml = {lang: _sts(emb, lang, N_STS_ML) for lang in ML_LANGS}
    tat = {lang: _tatoeba(emb, lang) for lang in TATOEBA}
    out = {
        "stsb_en": _sts(emb, "en", N_STS),
        "stsb_multilingual_avg": sum(ml.values()) / len(ml),
        "scifact_ndcg@10": _scifact(emb),
        "tatoeba_avg": sum(tat.values()) / len(tat),
        "stsb_multilingual": ml,
        "tatoeba": tat,
        "seconds": round(time.time() - t0, 1),
    }
    print(source, json.dumps(out), flush=True)
    return out


def evaluate_base() -> dict:
    """Base scores, cached in runs/ (they do not depend on training, so they can run while it trains)."""
    cache = RUNS / "quality-eval-base.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    base = evaluate_model("gemma3-270m")
    cache.write_text(json.dumps(base))
    return base


def evaluate_tuned() -> dict:
    cache = RUNS / "quality-eval-tuned.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    tuned = evaluate_model(str(RUNS / RUN_NAME / "merged"))
    cache.write_text(json.dumps(tuned))
    return tuned


def evaluate() -> Path:
    from common import write_result

    run_dir = RUNS / RUN_NAME
    manifest = json.loads((run_dir / "manifest.json").read_text())
    base = evaluate_base()
    tuned = evaluate_tuned()
    tasks = {}
    for key in ("stsb_en", "stsb_multilingual_avg", "scifact_ndcg@10", "tatoeba_avg"):
        tasks[key] = {"base": round(base[key], 2), "tuned": round(tuned[key], 2), "delta": round(tuned[key] - base[key], 2)}
    payload = {
        "tasks": tasks,
        "details": {"base": base, "tuned": tuned},
        "evaluation": (
            "minimal own evaluation (NOT the mteb harness): cosine, max_length 64 (SciFact docs 128); "
            f"STSb en first {N_STS} test pairs, Spearman x100; multilingual = mean over {ML_LANGS} of the first "
            f"{N_STS_ML} stsb_multi_mt test pairs; SciFact first {N_SCIFACT_Q} test queries vs a {N_SCIFACT_DOCS}-doc "
            f"corpus (their relevant docs + random docs), nDCG@10 x100; Tatoeba {TATOEBA} first {N_TATOEBA} pairs, "
            "xxx->eng nearest-neighbour accuracy x100 (= F1 for 1:1 mining). Instructions on both sides for "
            "STS/bitext (e5 protocol), query side only for SciFact."
        ),
        "training": {"run": str(run_dir), "manifest": manifest, "config": (run_dir / "config.yaml").read_text(),
                     "data": "Banking77 train (pairs + labels) + 6 GPT-4o retrieval triplets; see bench/quality_data.py"},
    }
    return write_result("quality", payload)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cmd = sys.argv[1] if len(sys.argv) > 1 else "train"
    if cmd == "train":
        print(train())
    elif cmd == "eval-base":
        print(evaluate_base())
    elif cmd == "eval-tuned":
        print(evaluate_tuned())
    elif cmd == "eval":
        print(evaluate())
    else:
        raise SystemExit(f"unknown command {cmd!r}: train | eval")
