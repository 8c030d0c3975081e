"""Train/serve parity on a real packaged model, deployed from serve/config.yaml's app args, over HTTP."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from serve_helpers import post

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


@pytest.fixture(scope="module")
def smol_app(ray_cluster):
    from ray import serve

    from synthembed.serve.app import app_builder

    app = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]
    args = app["args"]
    args["model"]["max_length"] = 128  # same as the smollm_embedder fixture; short keeps CI fast
    args["api_key_env"] = "SYNTHEMBED_TEST_NO_KEY"
    serve.run(app_builder(args), name="smol", route_prefix="/smol", blocking=False)
    yield "http://127.0.0.1:8000/smol"
    serve.delete("smol")


def test_served_embeddings_equal_embedder_encode(smol_app, smollm_embedder):
    docs = ["Aspirin reduces the risk of heart attack.", "Mitochondria are the powerhouse of the cell. " * 20]
    claims = ["Aspirin prevents myocardial infarction."]
    d = post(smol_app, {"input": docs, "model": "smollm2-135m", "input_type": "document"}).json()
    q = post(smol_app, {"input": claims, "input_type": "query", "instruction": INSTRUCTION,
                        "encoding_format": "base64"}).json()
    served_d = np.array([x["embedding"] for x in d["data"]], dtype=np.float32)
    served_q = np.frombuffer(base64.b64decode(q["data"][0]["embedding"]), dtype="<f4")
    want_d = smollm_embedder.encode(docs)
    want_q = smollm_embedder.encode(claims, instruction=INSTRUCTION)[0]
    np.testing.assert_allclose(served_d, want_d, atol=1e-5)
    np.testing.assert_allclose(served_q, want_q, atol=1e-5)
    # usage: real token counts, EOS included, the long document cut to max_length (128)
    ids = smollm_embedder.tokenize(docs)
    assert len(ids[1]) == 128
    assert d["usage"]["prompt_tokens"] == sum(map(len, ids))
    assert q["usage"]["prompt_tokens"] == len(smollm_embedder.tokenize(claims, instruction=INSTRUCTION)[0])
    # the instruction changes the embedding: a query is not embedded like a document
    raw_q = post(smol_app, {"input": claims}).json()["data"][0]["embedding"]
    assert np.abs(np.array(raw_q) - want_q).max() > 1e-3


def test_prometheus_metrics_exported(smol_app, ray_cluster):
    import ray

    post(smol_app, {"input": ["count me", "and me"]})
    port = ray.nodes()[0]["MetricsExportPort"]
    names = ("synthembed_requests", "synthembed_tokens", "synthembed_batch_items_bucket",
             "synthembed_batch_padded_tokens_bucket", "synthembed_request_latency_s_bucket",
             "synthembed_queued_inputs")
    # The metrics agent exports each series on its own flush cycle (a gauge can trail the counters set in the
    # same call by one cycle), so wait until every name is there or the deadline passes.
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in names):
            break
        time.sleep(2)
    for name in names:
        assert name in text, f"{name} not exported"
    tokens = [line for line in text.splitlines() if line.startswith("ray_synthembed_tokens") or
              line.startswith("synthembed_tokens")]
    assert tokens and float(tokens[0].rsplit(" ", 1)[1]) > 0, tokens
