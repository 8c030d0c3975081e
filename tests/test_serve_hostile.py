"""The service facing a hostile network, over real HTTP against a real Ray Serve app.

- a table of malformed and hostile requests (encodings, JSON edge cases, types, sizes, headers, methods,
  slow senders): each must get its expected 4xx in OpenAI's error shape, never a 500, never hang past
  its timeout, and be followed by a liveness request answered 200 with finite normalised vectors;
- a flood of incomplete requests, more than `max_ongoing_requests`, while a valid client keeps getting 200s;
- fail closed: a non-loopback host without a key refuses to start; without a key, a foreign Host is refused.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time

import numpy as np
import pytest
import requests

from serve_helpers import deploy_app

pytestmark = pytest.mark.slow

KEY = "hostile-test-key-4242"
PORT = 8000
BODY_TIMEOUT = 3.0
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def app(ray_cluster):
    from ray import serve

    url, cfg = deploy_app("hostile", {
        "model": {"source": "tiny-llama", "max_length": 64},
        "limits": {"max_items_per_request": 64, "max_body_bytes": 3_000_000, "max_response_bytes": 50_000,
                   "body_timeout_s": BODY_TIMEOUT},
        "deployment": {"max_ongoing_requests": 4, "max_queued_requests": 64},
    }, api_key=KEY)
    yield url
    serve.delete("hostile")


def raw(data: bytes, timeout: float = 15.0, stall: float = 0.0) -> tuple[int | None, dict, bytes]:
    """Send raw bytes (then optionally keep the connection open `stall` s); (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=timeout) as sock:
        sock.sendall(data)
        if stall:
            time.sleep(stall)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    reply = b"".join(chunks)
    if not reply.startswith(b"HTTP/"):
        return None, {}, reply
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return b"0\r\n\r\n" in body  # chunked end


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None, chunked: bool = False) -> bytes:
    hdrs = {"Host": f"127.0.0.1:{PORT}", "Connection": "close", **(headers if headers is not None else AUTH)}
    if chunked:
        hdrs["Transfer-Encoding"] = "chunked"
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                        for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    elif (body or method == "POST") and "Content-Length" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} /hostile{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + body


def post_json(text: str | bytes, headers: dict | None = None) -> bytes:
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return request("POST", "/v1/embeddings", body, headers)


DEEP = "[" * 5000 + "]" * 5000
CASES = [
    # name, raw request, expected statuses, expected error param (None: not checked)
    ("lone surrogate in input", post_json('{"input": "\\ud800"}'), {400}, "input"),
    ("lone surrogate in a list item", post_json('{"input": ["ok", "\\udfff"]}'), {400}, "input[1]"),
    ("lone surrogate in model", post_json('{"input": "a", "model": "\\ud83d"}'), {400}, "model"),
    ("5000-digit integer", post_json('{"input": "a", "dimensions": 1' + "0" * 5000 + "}"), {400}, None),
    ("nested 5000 deep", post_json('{"input": ' + DEEP + "}"), {400}, None),
    ("NaN", post_json('{"input": "a", "dimensions": NaN}'), {400}, None),
    ("Infinity", post_json('{"input": "a", "dimensions": Infinity}'), {400}, None),
    ("invalid UTF-8", post_json(b'{"input": "\xff\xfe"}'), {400}, None),
    ("UTF-16 body", post_json('{"input": "a"}'.encode("utf-16")), {400}, None),
    ("empty body", post_json(b""), {400}, None),
    ("null body", post_json("null"), {400}, None),
    ("array body", post_json("[]"), {400}, None),
    ("string body", post_json('"input"'), {400}, None),
    ("trailing garbage", post_json('{"input": "a"} x'), {400}, None),
    ("input a number", post_json('{"input": 3.5}'), {400}, "input"),
    ("input an object", post_json('{"input": {"a": 1}}'), {400}, "input"),
    ("input mixed list", post_json('{"input": ["a", 1]}'), {400}, "input[1]"),
    ("input with null", post_json('{"input": ["a", null]}'), {400}, "input[1]"),
    ("input empty string", post_json('{"input": ""}'), {400}, "input"),
    ("input empty list", post_json('{"input": []}'), {400}, "input"),
    ("token ids, off by default", post_json('{"input": [1, 2, 3]}'), {400}, "input"),
    ("dimensions negative", post_json('{"input": "a", "dimensions": -1}'), {400}, "dimensions"),
    ("dimensions float", post_json('{"input": "a", "dimensions": 2.5}'), {400}, "dimensions"),
    ("dimensions bool", post_json('{"input": "a", "dimensions": true}'), {400}, "dimensions"),
    ("encoding_format bogus", post_json('{"input": "a", "encoding_format": "hex"}'), {400}, "encoding_format"),
    ("input_type bogus", post_json('{"input": "a", "input_type": "passage"}'), {400}, "input_type"),
    ("instruction a number", post_json('{"input": "a", "instruction": 5}'), {400}, "instruction"),
    ("unknown field", post_json('{"input": "a", "dimension": 8}'), {400}, "dimension"),
    ("too many items", post_json(json.dumps({"input": ["a"] * 65})), {413}, "input"),
    ("declared body over the cap", request("POST", "/v1/embeddings", b"", {**AUTH, "Content-Length": "9999999"}),
     {413}, None),
    ("chunked body over the cap", request("POST", "/v1/embeddings", json.dumps({"input": "z" * 4_000_000}).encode(),
                                          chunked=True), {413}, None),
    ("answer too large", post_json(json.dumps({"input": ["a"] * 64})), {413}, "input"),
    ("1 MB model name", post_json(json.dumps({"input": "a", "model": "m" * 1_000_000})), {404}, "model"),
    ("text/plain", post_json('{"input": "a"}', {"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"}),
     {415}, None),
    ("no content type", post_json('{"input": "a"}', {"Authorization": f"Bearer {KEY}"}), {415}, None),
    ("no API key", post_json('{"input": "a"}', {"Content-Type": "application/json"}), {401}, None),
    ("Basic auth", post_json('{"input": "a"}', {"Authorization": "Basic eDp5", "Content-Type": "application/json"}),
     {401}, None),
    ("GET /v1/embeddings", request("GET", "/v1/embeddings"), {405}, None),
    ("PUT /v1/embeddings", request("PUT", "/v1/embeddings", b"{}"), {405}, None),
    ("DELETE /health", request("DELETE", "/health"), {405}, None),
    ("unknown route", request("POST", "/v1/embedding", b"{}"), {404}, None),
    ("128 KB header line", request("GET", "/health", headers={**AUTH, "X-Big": "a" * 131072}), {400, 413, 431}, None),
]


def _alive(url: str) -> None:
    r = requests.post(url + "/v1/embeddings", json={"input": ["still alive", "and well"]}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    v = np.array([d["embedding"] for d in r.json()["data"]])
    assert np.isfinite(v).all() and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("name, data, statuses, param", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_gets_a_shaped_4xx_and_the_service_stays_up(app, name, data, statuses, param):
    status, headers, body = raw(data)
    assert status in statuses, (name, status, body[:300])
    if not (name.startswith("128 KB") or status == 413 and not body.startswith(b"{")):
        err = json.loads(body)["error"]  # OpenAI's shape
        assert err["message"] and err["type"], (name, err)
        if param is not None:
            assert err["param"] == param, (name, err)
        assert len(body) < 5000, f"{name}: the answer echoes the request back ({len(body)} bytes)"
    if status == 405:
        assert "POST" in headers.get("allow", "") or "GET" in headers.get("allow", ""), headers
    _alive(app)


def test_slow_body_gets_408_within_the_body_timeout_even_when_the_client_lifts_serves(app):
    head = request("POST", "/v1/embeddings", b"", {**AUTH, "Content-Length": "1000",
                                                 "x-request-timeout-seconds": "0",
                                                 "x-request-disconnect-disabled": "?1"})
    t0 = time.time()
    status, _, body = raw(head + b'{"input": "a', timeout=BODY_TIMEOUT + 20)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout", body[:300]
    assert time.time() - t0 < BODY_TIMEOUT + 10
    _alive(app)


def test_a_flood_of_incomplete_requests_does_not_starve_valid_clients(app):
    flood = 12  # three times max_ongoing_requests (4)
    partial = request("POST", "/v1/embeddings", b"", {**AUTH, "Content-Length": "100000"}) + b'{"input": "'

    def hold(_):
        return raw(partial, timeout=60)[0]

    with cf.ThreadPoolExecutor(flood + 1) as pool:
        held = [pool.submit(hold, i) for i in range(flood)]
        time.sleep(1.0)  # the flood occupies every replica slot
        latencies = []
        for _ in range(3):
            t0 = time.time()
            r = requests.post(app + "/v1/embeddings", json={"input": "valid"}, headers=AUTH, timeout=60)
            assert r.status_code == 200, r.text
            latencies.append(time.time() - t0)
        statuses = [f.result() for f in held]
    assert set(statuses) <= {408}, statuses
    # Each slow request holds a slot for at most the body timeout: a valid request waits at most
    # (flood / slots) body timeouts, not forever.
    assert max(latencies) < (flood / 4) * BODY_TIMEOUT + 10, latencies


def test_no_key_on_a_network_host_refuses_to_start():
    from synthembed.serve import ServeConfig
    from synthembed.serve.app import build_app

    cfg = ServeConfig.model_validate({"model": {"source": "tiny-llama"}, "host": "0.0.0.0",
                                      "api_key_env": "SYNTHEMBED_TEST_NO_SUCH_KEY"})
    with pytest.raises(ValueError, match="reachable from the network.*allow_anonymous"):
        build_app(cfg)
    build_app(cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"allow_anonymous": True})}))


def test_without_a_key_a_foreign_host_header_is_refused(ray_cluster):
    from ray import serve

    url, _ = deploy_app("open", {"model": {"source": "tiny-llama", "max_length": 32}})
    try:
        ok = requests.post(url + "/v1/embeddings", json={"input": "a"}, timeout=30)
        assert ok.status_code == 200
        r = requests.post(url + "/v1/embeddings", json={"input": "a"}, headers={"Host": "evil.example:8000"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    finally:
        serve.delete("open")
