"""Integration: real Ray Data runs against real llama.cpp servers (the packaged SmolLM2 GGUF).

Small on purpose (2-core CI): a handful of rows, short fields, few tokens. Outputs of a 135M model are
shallow; these tests check structure, bookkeeping and the engine paths, not content quality.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthembed.synth import EXAMPLE_SCHEMA, read_examples, run
from synthembed.synth.ledger import Ledger
from synth_helpers import config, resolved
from synth_helpers import engine as _engine
from synthembed.synth.tasks import TASK_TYPES, sample_placeholders

REPO = Path(__file__).resolve().parents[1]
LANGS = ("English", "German", "French", "Spanish", "Japanese", "Swahili", "Russian")


def _config(out: Path, **kw):
    return config(out, LANGS, **kw)


@pytest.mark.slow
def test_embedded_run_all_six_types_many_languages(ray_cluster, tmp_path):
    out = tmp_path / "gen"
    # Room for whole documents (a field cut at maxLength is a `truncated` reject) and extra short_long
    # rows: the 135M model writes long documents, so that type needs the most attempts.
    lengths = {"short_min": 1, "short_max": 60, "long_min": 20, "long_max": 400}
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 400, "repetition_penalty": 1.1}
    mix = {t: 4.0 if t == "short_long" else 1.0 for t in TASK_TYPES}
    cfg = _config(out, num_examples=24, task_mix=mix, min_per_type=3, lengths=lengths,
                  engine=_engine("embedded", sampling=sampling),
                  fallback=_engine("fallback", sampling={**sampling, "temperature": 0.3, "top_p": 0.9}))
    assert run(cfg) == out
    assert (out / "manifest.json").exists() and (out / "summary.md").exists()
    ex = read_examples(out)
    assert ex.schema.equals(EXAMPLE_SCHEMA)
    rows = ex.to_pylist()
    assert {r["task_type"] for r in rows} == set(TASK_TYPES), "every task type has valid rows"
    assert len({r["language"] for r in rows}) >= 5
    for r in rows:
        assert r["query"].strip() and r["positive"].strip() and r["instruction"].strip()
        assert (r["hard_negative"] is None) == (r["task_type"] in ("short_short", "long_long"))
        assert r["generator"] in ("embedded:smollm2-135m", "fallback:smollm2-135m")
        assert json.loads(r["placeholders"]) is not None and r["prompt_version"]
        assert len(r["query"]) < 400 and len(r["positive"]) < 400
        if r["task_type"] == "bitext":
            assert r["src_language"] and r["tgt_language"] and r["src_language"] != r["tgt_language"]
    plan, _, rj = resolved(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["examples"] == len(rows) and stats["requests_planned"] == 24 == len(plan)
    assert stats["tokens_out"] > 0 and stats["tokens_in"] > stats["tokens_out"] / 10
    assert sum(v["valid"] for v in stats["validity_per_engine"].values()) == len(rows)
    bs = pq.read_table(out / "brainstorm.parquet").to_pylist()
    assert {b["task_type"] for b in bs} == {"short_long", "long_short", "short_short", "long_long"}
    # A complete folder is skipped: nothing is rewritten.
    mtime = (out / "manifest.json").stat().st_mtime_ns
    run(cfg)
    assert (out / "manifest.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_fallback_engine_takes_the_rows_the_primary_failed(ray_cluster, tmp_path):
    out = tmp_path / "fb"
    # The primary may emit only 6 tokens: every JSON object is cut off, a real engine failure mode.
    cfg = _config(out, num_examples=4, task_mix={"sts": 1.0, "short_short": 1.0}, tasks_per_brainstorm=2,
                  engine=_engine("primary", sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 6}),
                  fallback=_engine("fallback", sampling={"temperature": 0.5, "top_p": 0.9, "max_tokens": 300,
                                                        "repetition_penalty": 1.1}))
    run(cfg)
    plan, ex, rj = resolved(out)
    assert ex and {r["generator"] for r in ex} == {"fallback:smollm2-135m"}
    primary = [r for r in rj if r["engine_index"] == 0 and r["stage"] == "example"]
    assert {r["request_id"] for r in primary} == set(plan), "every row was tried on the primary first"
    # ... and then answered by the fallback: an example, or the fallback's own final reject. (How many of
    # the 4 the 135M model gets valid varies from run to run; that every row reached it does not.)
    second = {r["request_id"] for r in ex} | {r["request_id"] for r in rj if r["engine_index"] == 1
                                              and r["stage"] == "example" and not r["retry_next"]}
    assert second == set(plan)
    assert all(r["retry_next"] and r["reason"].startswith("truncated") and r["raw"] for r in primary)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["validity_per_engine"]["primary:smollm2-135m"]["valid"] == 0
    assert stats["brainstorm_rejects"] >= 1  # the brainstorm also went through the fallback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def openai_server():
    """A real OpenAI-compatible server (llama.cpp) with API-key auth, started by the test."""
    from synthembed.packaged import gguf_path
    from synthembed.synth.embedded import server_binary

    port, key = _free_port(), "test-key-7f3a"
    proc = subprocess.Popen(
        [str(server_binary()), "--model", str(gguf_path("smollm2-135m")), "--alias", "smol-openai",
         "--host", "127.0.0.1", "--port", str(port), "--threads", "2", "--ctx-size", "4096", "--parallel", "2",
         "--api-key", key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {key}"}),
                                   timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    yield url, key
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.mark.slow
def test_openai_compatible_endpoint_with_key_from_env(ray_cluster, tmp_path, openai_server, monkeypatch):
    url, key = openai_server
    engine = {"kind": "openai", "name": "openai", "model": "smol-openai", "base_url": url,
              "api_key_env": "SYNTH_IT_API_KEY", "response_format": "json_object_schema", "batch_size": 2,
              "qps": 5, "max_retries": 2, "retry_base_s": 0.5,
              "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 300, "repetition_penalty": 1.1}}
    monkeypatch.setenv("SYNTH_IT_API_KEY", key)
    out = tmp_path / "oa"
    run(_config(out, num_examples=3, task_mix={"sts": 1.0, "bitext": 1.0}, engine=engine))
    plan, ex, rj = resolved(out)
    assert len(ex) >= 1 and {r["generator"] for r in ex} == {"openai:smol-openai"}
    for f in out.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f"API key leaked into {f}"
    # A wrong key: the endpoint answers 401 and every row is rejected as an engine error, nothing crashes.
    monkeypatch.setenv("SYNTH_IT_API_KEY", "wrong-key")
    bad = tmp_path / "oa-bad"
    run(_config(bad, num_examples=2, task_mix={"sts": 1.0}, engine=engine))
    _, ex2, rj2 = resolved(bad)
    assert ex2 == [] and {r["reason"].split(":")[0] for r in rj2} == {"engine_error"}


@pytest.mark.slow
def test_kill_and_resume_without_duplicates(ray_cluster, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, str(REPO / "jobs" / "generate.py"), "--config", str(REPO / "configs" / "cpu-tiny.yaml"),
           "--set", f"generate.output_dir={out}", "--set", "generate.num_examples=12",
           "--set", "generate.engine.batch_size=1",
           "--set", "generate.task_mix={sts: 1, bitext: 1}", "--set", "generate.min_per_type=0",
           "--set", "generate.commit_every=1", "--set", "generate.fallback=null",
           "--set", "generate.languages=[English, German, French]"]
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6390"}
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "examples").glob("*.parquet")):
        assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # a hard kill: no cleanup code runs
    proc.wait()
    assert not (out / "manifest.json").exists()
    before = {p.name: p.read_bytes() for p in (out / "examples").glob("*.parquet")}
    before_rj = {p.name: p.read_bytes() for p in (out / "rejects").glob("*.parquet")}
    done_before = sum(pq.read_table(out / "examples" / n).num_rows for n in before) + sum(
        pq.read_table(out / "rejects" / n).num_rows for n in before_rj)
    assert 1 <= done_before < 12, "kill it mid-run"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "manifest.json").exists()
    for name, data in {**before}.items():  # committed work is kept as it was
        assert (out / "examples" / name).read_bytes() == data
    plan, ex, rj = resolved(out)
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 1  # the killed run never finished
    redone = runs[0].get("examples", 0) + runs[0].get("rejects", 0) + runs[0].get("duplicates", 0)
    assert redone == len(plan) - done_before, "finished rows were generated again"


@pytest.mark.slow
def test_http_stage_sends_each_rows_own_schema(ray_cluster):
    """Rows with different JSON schemas share an Arrow block; each request must carry its own schema."""
    import ray

    from synthembed.synth.config import EngineConfig
    from synthembed.synth.engines import apply_engine
    from synthembed.synth.prompts import example_schema

    seen = []

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            data = json.dumps({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    bounds = {"short": (2, 50), "long": (5, 100)}
    # Many rows of every type over several blocks: Arrow must neither merge their schemas nor fail to
    # concatenate blocks whose payloads differ in shape (both happened before payloads became JSON strings).
    rng = random.Random(0)
    cases = [(t, sample_placeholders(t, rng)) for _ in range(8) for t in TASK_TYPES]
    rows = [{"request_id": str(i), "engine_index": 0, "seed": i,
             "messages": json.dumps([{"role": "user", "content": str(i)}]),
             "schema": json.dumps(example_schema(t, p, bounds))} for i, (t, p) in enumerate(cases)]
    engine = EngineConfig(kind="openai", base_url=url, response_format="json_object_schema", batch_size=4)
    out = apply_engine(ray.data.from_items(rows, override_num_blocks=12), engine, url, "m").take_all()
    srv.shutdown()
    assert len(out) == len(rows) == len(seen)
    for body in seen:
        t, p = cases[int(body["messages"][0]["content"])]
        assert body["response_format"]["schema"] == example_schema(t, p, bounds)


@pytest.mark.slow
def test_raising_num_examples_grows_the_set_and_keeps_every_finished_row(ray_cluster, tmp_path):
    """A set is built up over several runs: a larger num_examples extends the plan (and the brainstorm) and
    generates only the new requests; a smaller one is refused by name; a time budget ends a run with a
    usable partial set that the next run completes; nothing is moved aside or redone."""
    from synthembed.errors import StageError
    from synthembed.synth.plan import plan_fingerprint

    def brainstorm_calls() -> int:  # answered or finally rejected: each call is made once
        ledger = Ledger(out)
        done = set(ledger.outcomes("brainstorm").column("request_id").to_pylist())
        return len(done | {r["request_id"] for r in ledger.rejects().to_pylist() if r["stage"] == "brainstorm"})

    out = tmp_path / "grow"
    small = _config(out, num_examples=2, task_mix={"sts": 1, "short_long": 1}, min_per_type=1,
                    tasks_per_brainstorm=2, commit_every=1)
    run(small)
    plan1, _, _ = resolved(out)
    stored = pq.read_table(out / "plan.parquet").to_pylist()
    finished = {p: p.read_bytes() for d in ("examples", "rejects", "brainstorm") for p in (out / d).glob("*.parquet")}
    assert len(plan1) == 2 and brainstorm_calls() == 1

    big = small.model_copy(update={"num_examples": 8})  # short_long 4 rows: 2 brainstorm calls of 2 tasks
    run(big)
    plan2, _, _ = resolved(out)
    assert pq.read_table(out / "plan.parquet").to_pylist()[:2] == stored, "planned rows were rewritten"
    assert len(plan2) == 8 and len(set(plan2)) == 8
    for path, data in finished.items():
        assert path.read_bytes() == data, f"{path.name} was rewritten"
    assert brainstorm_calls() == 2, "the grown plan brainstormed its new tasks once"
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sum(runs[-1].get(k, 0) for k in ("examples", "rejects", "duplicates")) == 6, "old requests were redone"
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == plan_fingerprint(big)
    assert not list(tmp_path.glob("grow.superseded-*"))

    with pytest.raises(StageError, match=r"generate\.num_examples=5 is below the 8 requests"):
        run(big.model_copy(update={"num_examples": 5}))
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == plan_fingerprint(big), "work was lost"

    # a time budget of 0 finishes the grown folder at once as a partial set the next stages can read ...
    bigger = big.model_copy(update={"num_examples": 12})
    run(bigger.model_copy(update={"time_budget_minutes": 0}))
    partial = json.loads((out / "manifest.json").read_text())
    assert partial["partial"] is True and partial["requests_planned"] == 12 and partial["requests_owed"] == 4
    assert partial["fingerprint"] not in (plan_fingerprint(big), plan_fingerprint(bigger))
    assert len(read_examples(out)) == partial["examples"]
    # ... and the next run without a budget sends only the 4 owed requests and completes the plan
    run(bigger)
    plan3, _, _ = resolved(out)
    assert len(plan3) == 12
    final = json.loads((out / "manifest.json").read_text())
    assert final["fingerprint"] == plan_fingerprint(bigger) and "partial" not in final
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-2]["owed"] == 4 and sum(runs[-1].get(k, 0) for k in ("examples", "rejects", "duplicates")) == 4
