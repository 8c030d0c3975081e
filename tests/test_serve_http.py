"""The embedding service over real HTTP against a real Ray Serve app on the shared test cluster.

One tiny-llama app (API key on, small limits) carries the guard-rail tests; parity runs in
tests/test_serve_parity.py on a real packaged model; overload gets its own app with a 1-deep queue.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json

import numpy as np
import pytest
import requests

from serve_helpers import deploy_app, post

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def tiny_app(ray_cluster):
    from ray import serve

    url, cfg = deploy_app(
        "tiny",
        {"model": {"source": "tiny-llama", "max_length": 64},
         "limits": {"max_items_per_request": 16, "max_body_bytes": 1_000_000, "truncate": "end",
                    "accept_token_ids": True},
         "batching": {"max_batch_tokens": 512},
         "default_query_instruction": None},
        api_key=KEY,
    )
    yield url, cfg
    serve.delete("tiny")


def ok(url, payload):
    r = post(url, payload, key=KEY)
    assert r.status_code == 200, r.text
    return r.json()


def test_shape_usage_and_truncation(tiny_app, tiny_embedder):
    url, cfg = tiny_app
    long_text = "x" * 1000
    body = ok(url, {"input": ["hello world", long_text], "model": "tiny-llama"})
    assert body["object"] == "list" and body["model"] == "tiny-llama"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vecs = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vecs.shape == (2, tiny_embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # usage = real token counts after truncation: EOS included, the long one cut to the 64-token cap
    expected = sum(len(x) for x in tiny_embedder.tokenize(["hello world", long_text], max_length=64))
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert len(tiny_embedder.tokenize([long_text], max_length=64)[0]) == 64


def test_matches_embedder_with_instruction_dimensions_base64(tiny_app, tiny_embedder):
    url, _ = tiny_app
    texts = ["what is a cat?", "a cat is a small feline"]
    instr = "Given a question, retrieve passages that answer it"
    q = ok(url, {"input": texts[:1], "input_type": "query", "instruction": instr})
    d = ok(url, {"input": texts[1:], "input_type": "document", "encoding_format": "base64"})
    want = tiny_embedder.encode(texts[:1], instruction=instr, max_length=64)
    np.testing.assert_allclose(np.array(q["data"][0]["embedding"]), want[0], atol=1e-5)
    got_d = np.frombuffer(base64.b64decode(d["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(got_d, tiny_embedder.encode(texts[1:], max_length=64)[0], atol=1e-5)
    # dimensions: cut the raw vector, then re-normalise
    cut = ok(url, {"input": texts[1], "dimensions": 8})["data"][0]["embedding"]
    raw = tiny_embedder.encode(texts[1:], max_length=64, normalize=False)[0][:8]
    np.testing.assert_allclose(cut, raw / np.linalg.norm(raw), atol=1e-5)


def test_token_id_input_and_large_batch_split(tiny_app, tiny_embedder):
    url, _ = tiny_app
    ids = tiny_embedder.tokenize(["token ids"], max_length=64)[0]
    by_ids = ok(url, {"input": [ids[:-1]]})["data"][0]["embedding"]  # EOS appended by the server
    by_text = ok(url, {"input": "token ids"})["data"][0]["embedding"]
    np.testing.assert_allclose(by_ids, by_text, atol=1e-5)
    # a flat id list is ONE text, however long (OpenAI allows 8192 ids): not "input has 40 items"
    long_ids = tiny_embedder.tokenize(["word " * 60], max_length=64)[0][:40]
    flat = ok(url, {"input": long_ids})
    assert len(flat["data"]) == 1 and flat["usage"]["prompt_tokens"] == 41  # + the EOS the server appends
    # 16 items of ~64 tokens against a 512-token budget: served in several batches, order kept
    texts = [f"item {i} " + "y" * (40 + i) for i in range(16)]
    body = ok(url, {"input": texts})
    want = tiny_embedder.encode(texts, max_length=64)
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), want, atol=1e-5)


BAD = [
    ("empty string", {"input": ""}, 400, "input"),
    ("empty list", {"input": []}, 400, "input"),
    ("non-string item", {"input": ["ok", 3]}, 400, "input[1]"),
    ("nested non-int", {"input": [[5, "a"]]}, 400, "input[0][1]"),
    ("token id outside vocab", {"input": [[5, 10_000_000]]}, 400, "input[0][1]"),
    ("too many items", {"input": ["a"] * 17}, 413, "input"),
    ("wrong model", {"input": "a", "model": "gpt-4"}, 404, "model"),
    ("bad encoding_format", {"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ("dimensions zero", {"input": "a", "dimensions": 0}, 400, "dimensions"),
    ("dimensions too big", {"input": "a", "dimensions": 100_000}, 400, "dimensions"),
    ("dimensions string", {"input": "a", "dimensions": "8"}, 400, "dimensions"),
    ("query without instruction", {"input": "a", "input_type": "query"}, 400, "instruction"),
    ("document with instruction", {"input": "a", "input_type": "document", "instruction": "x"}, 400, "instruction"),
    ("unknown field", {"input": "a", "dimension": 8}, 400, "dimension"),
    ("input missing", {"model": "tiny-llama"}, 400, "input"),
]


def test_bad_inputs_are_4xx_in_openai_shape_and_server_keeps_answering(tiny_app):
    url, _ = tiny_app
    for name, payload, status, param in BAD:
        r = post(url, payload, key=KEY)
        assert r.status_code == status, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert err["param"] == param, (name, err)
        assert err["message"] and err["type"], (name, err)
    # raw-body cases: 10 MB body and broken JSON
    big = json.dumps({"input": ["z" * 1000] * 10_000}).encode()
    assert len(big) > 10_000_000
    r = post(url, key=KEY, data=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"], r.text
    r = post(url, key=KEY, data=b'{"input": ')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert ok(url, {"input": "still alive"})["data"][0]["embedding"]


def test_api_key_required_on_every_route(tiny_app):
    url, _ = tiny_app
    routes = [("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/embeddings"), ("GET", "/docs"),
              ("GET", "/openapi.json"), ("GET", "/no/such/route")]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = requests.request(method, url + path, json={"input": "a"}, headers=headers, timeout=30)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["error"]["type"] == "authentication_error"
    good = {"Authorization": f"Bearer {KEY}"}
    r = requests.get(url + "/health", headers=good, timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "tiny-llama"
    assert requests.get(url + "/v1/models", headers=good, timeout=30).json()["data"][0]["id"] == "tiny-llama"


def test_overload_burst_gets_429_with_retry_after_not_timeouts(ray_cluster):
    from ray import serve

    url, _ = deploy_app(
        "busy",
        {"model": {"source": "tiny-llama", "max_length": 256},
         "limits": {"max_items_per_request": 256},
         "deployment": {"max_ongoing_requests": 1, "max_queued_requests": 1, "overload_status": 429,
                        "retry_after_s": 2}},
    )
    try:
        heavy = {"input": ["w" * 240] * 256}  # enough work that a 24-request burst piles up

        def one(_):
            try:
                return post(url, heavy, timeout=120)
            except requests.RequestException as err:  # a timeout or reset is a failure of this test
                return err

        with cf.ThreadPoolExecutor(24) as pool:
            results = list(pool.map(one, range(24)))
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors[:3]
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 429}, codes
        assert codes.count(429) >= 10 and codes.count(200) >= 1, codes
        rejected = next(r for r in results if r.status_code == 429)
        assert rejected.headers.get("Retry-After") == "2"
        r = post(url, {"input": "after the burst"})
        assert r.status_code == 200
    finally:
        serve.delete("busy")
