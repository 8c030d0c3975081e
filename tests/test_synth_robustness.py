"""Generation survives its engines: a killed engine, an engine that never works, a hostile endpoint.

Real parts only: the packaged SmolLM2 behind the real llama.cpp server, a real Ray cluster, and for the
hostile case a real HTTP server written here that misbehaves in every way a remote endpoint can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthembed.synth import GenerateConfig, run
from synth_helpers import config, engine, resolved

REPO = Path(__file__).resolve().parents[1]


def _engine(name: str, **kw) -> dict:
    return engine(name, **{"batch_size": 2, **kw})


def _config(out: Path, **kw):
    return config(out, ("English", "German", "French"), **{"task_mix": {"sts": 1.0}, "commit_every": 1, **kw})


def _busy(port: int) -> bool:
    """llama-server's /slots: is any slot decoding a request now?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/slots", timeout=2) as resp:
            return any(slot.get("is_processing") for slot in json.loads(resp.read()))
    except OSError:
        return False


@pytest.mark.slow
def test_engine_killed_mid_run_is_restarted_and_the_run_finishes(ray_cluster, tmp_path):
    out = tmp_path / "kill"
    # No HTTP retries: the request in flight when the engine dies is lost and must be re-sent by the pass.
    cfg = _config(out, num_examples=8, engine=_engine("embedded", max_retries=0))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=run(cfg)), daemon=True)
    worker.start()
    state = out / "engine-0.json"
    # Kill while an example request is being decoded: the example pass has started (plan written) and a slot
    # of the server is busy. (Waiting for a committed part instead raced: with slots decoding together the
    # 8 rows could all finish before the kill.)
    deadline = time.time() + 300
    while not ((out / "plan.parquet").exists() and state.exists() and _busy(json.loads(state.read_text())["port"])):
        assert worker.is_alive(), "the run ended before the engine was killed"
        assert time.time() < deadline, "no example request reached the engine in 5 minutes"
        time.sleep(0.1)
    pid = json.loads(state.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # the llama.cpp server, not the job
    worker.join(timeout=600)
    assert result.get("out") == out, "the run did not finish after the engine was killed"
    plan, ex, rj = resolved(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["engine_restarts"] == {"embedded:smollm2-135m": 1}
    assert stats["requests_unresolved"] == 0 and stats["examples"] == len(ex) >= 1
    assert stats["requests_resent"] >= 1, "the row in flight at the kill was re-sent"
    assert not [r for r in rj if "connection" in r["reason"]], "a row lost with the engine was rejected"
    assert json.loads(state.read_text())["pid"] != pid, "a new engine process served the rest"
    print(f"kill test: {len(plan)} planned, {len(ex)} examples, {len(rj)} rejects, "
          f"restarts {stats['engine_restarts']}, re-sent {stats['requests_resent']}")


@pytest.mark.slow
def test_engine_that_never_works_stops_the_job_clearly_and_keeps_committed_rows(ray_cluster, tmp_path):
    out = tmp_path / "dead"
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a file llama.cpp refuses: the server exits at start-up
    # Run 1: the primary answers every row (max_tokens=6 cuts the JSON: rejects for the fallback); the
    # fallback's process exits at once, every time.
    primary = _engine("primary", sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 6})
    cfg = _config(out, num_examples=4, engine=primary, fallback=_engine("fallback", model=str(broken), max_restarts=2))
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6390"}
    cmd = [sys.executable, str(REPO / "jobs" / "generate.py"), "--config", str(tmp_path / "cfg.yaml")]
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"generate": cfg.model_dump(mode="json")}))
    t0 = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode != 0
    msg = res.stderr
    assert "fallback:" in msg and "exited with code" in msg and str(out / "engine-1.log") in msg, msg[-3000:]
    assert "restarted 2 time(s)" in msg and "rejected attempts are committed" in msg, msg[-3000:]
    # One message (Ray's own logging shares stderr), and no traceback of the job itself.
    assert "\nerror: generate: engine fallback:" in msg and 'generate.py", line' not in msg, msg[-3000:]
    assert not (out / "manifest.json").exists()
    before = {p.name: p.read_bytes() for p in (out / "rejects").glob("*.parquet")}
    assert sum(pq.read_table(out / "rejects" / n).num_rows for n in before) == 4
    print(f"never-works: failed after {time.time() - t0:.0f} s with:\n{msg[-1500:]}")
    # Run 2, a working fallback: the primary's committed rows are reused, not generated again.
    good = cfg.model_copy(update={"fallback": GenerateConfig.model_validate(
        {"fallback": _engine("fallback")}).fallback})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"generate": good.model_dump(mode="json")}))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for name, data in before.items():
        assert (out / "rejects" / name).read_bytes() == data
    plan, ex, rj = resolved(out)
    assert {r["engine_index"] for r in rj if r["stage"] == "example" and r["generator"].startswith("primary")} == {0}
    assert sum(1 for r in rj if r["engine_index"] == 0) == 4, "the primary ran again"
    assert all(r["generator"] == "fallback:smollm2-135m" for r in ex)


# ----------------------------------------------------------------------------------- hostile endpoint
def _valid_content(schema: dict, salt: str) -> str:
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    obj = {}
    for i, (key, prop) in enumerate(schema["properties"].items()):
        text = f"{words[i % len(words)]} {salt} sentence number {i} about rivers"
        obj[key] = text[: prop.get("maxLength", 1000) - 1]
    return json.dumps(obj)


BEHAVIOURS = ("http_500", "http_429", "not_json", "html_page", "content_list", "nested_deep", "huge_int",
              "cut_at_max_tokens", "slow", "closed", "usage_not_number")


class _Hostile(BaseHTTPRequestHandler):
    assigned: dict = {}
    lock = threading.Lock()

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = req["seed"]  # distinct per row (two rows may share a prompt), equal across the client's retries
        with self.lock:  # one behaviour per distinct request, kept across the client's retries
            behaviour = self.assigned.setdefault(key, BEHAVIOURS[len(self.assigned) % len(BEHAVIOURS)])
        choice = {"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 10, "completion_tokens": 5}
        if behaviour == "http_500":
            return self._send(500, b'{"error": {"message": "internal"}}')
        if behaviour == "http_429":
            return self._send(429, b'{"error": {"message": "slow down"}}')
        if behaviour == "not_json":
            return self._send(200, b"this is not json", "text/plain")
        if behaviour == "html_page":
            return self._send(502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html")
        if behaviour == "slow":
            time.sleep(4)
        if behaviour == "closed":
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if behaviour == "content_list":
            choice["message"]["content"] = [{"type": "text", "text": "{}"}]
        elif behaviour == "nested_deep":
            choice["message"]["content"] = "[" * 5000 + "]" * 5000
        elif behaviour == "huge_int":
            choice["message"]["content"] = '{"S1": ' + "9" * 5000 + "}"
        elif behaviour == "cut_at_max_tokens":
            choice.update(finish_reason="length", message={"role": "assistant", "content": '{"S1": "alpha bra'})
        elif behaviour == "usage_not_number":
            usage["completion_tokens"] = "lots"
            choice["message"]["content"] = _valid_content(req["response_format"]["json_schema"]["schema"], "u")
        body = {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}
        return self._send(200, json.dumps(body).encode())

    def log_message(self, *a):
        pass


class _Good(_Hostile):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = _valid_content(req["response_format"]["json_schema"]["schema"], str(req["seed"] % 997))
        body = {"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
        self._send(200, json.dumps(body).encode())


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


@pytest.mark.slow
def test_hostile_endpoint_every_row_ends_as_example_or_named_reject(ray_cluster, tmp_path):
    _Hostile.assigned = {}
    hostile, hurl = _serve(_Hostile)
    good, gurl = _serve(_Good)
    common = {"kind": "openai", "response_format": "json_schema", "batch_size": 4, "max_retries": 1,
              "retry_base_s": 0.1, "request_timeout_s": 2}
    cfg = _config(tmp_path / "hostile", num_examples=len(BEHAVIOURS),
                  engine={**common, "name": "hostile", "model": "h", "base_url": hurl},
                  fallback={**common, "name": "good", "model": "g", "base_url": gurl})
    try:
        run(cfg)
    finally:
        hostile.shutdown()
        good.shutdown()
    out = Path(cfg.output_dir)
    plan, ex, rj = resolved(out)
    assert sorted(set(_Hostile.assigned.values())) == sorted(BEHAVIOURS), "every behaviour was exercised"
    primary = {r["request_id"]: r["reason"] for r in rj if r["engine_index"] == 0}
    assert len(primary) == len(plan), "every row failed on the hostile primary and was rejected there"
    reasons = " | ".join(primary.values())
    for needle in ("HTTP 500", "HTTP 429", "body is not JSON", "HTML error page", "content is a list",
                   "nested too deep", "digits", "truncated", "request_timeout_s", "connection",
                   "usage.completion_tokens"):
        assert needle in reasons, f"no reject reason names {needle!r}: {reasons}"
    assert all(r["retry_next"] for r in rj if r["engine_index"] == 0)
    assert len(ex) == len(plan) and {r["generator"] for r in ex} == {"good:g"}


class _Slow(_Good):
    """A good endpoint that takes `delay_s` per answer and counts what it was asked."""
    delay_s = 2.5
    asked: list = []

    def do_POST(self):
        with self.lock:
            self.asked.append(time.time())
        time.sleep(self.delay_s)
        super().do_POST()


@pytest.mark.slow
def test_time_budget_ends_a_pass_midway_and_the_next_run_finishes_it(ray_cluster, tmp_path):
    """The budget runs out while engine 0 is answering: the run commits every finished row, returns a partial
    set, and the next run (no budget) sends only what is owed; every finished row stays where it was."""
    _Slow.asked = []
    srv, url = _serve(_Slow)
    engine_cfg = {"kind": "openai", "name": "slow", "model": "s", "base_url": url, "response_format": "json_schema",
                  "batch_size": 1, "concurrency": 1, "max_retries": 0, "request_timeout_s": 30}
    cfg = _config(tmp_path / "budget", num_examples=40, engine=engine_cfg, time_budget_minutes=0.75)
    out = Path(cfg.output_dir)
    try:
        run(cfg)
        partial = json.loads((out / "manifest.json").read_text())
        finished = {p: p.read_bytes() for p in (out / "examples").glob("*.parquet")}
        first_run = len(_Slow.asked)
        # 40 answers at 2.5 s one at a time take 100 s; the 45 s budget stops the pass partway and leaves a
        # loaded machine's Ray Data start-up (counted in the budget) time to commit a first row
        assert partial["partial"] is True and partial["requests_planned"] == 40
        assert 0 < partial["examples"] < 40, "the pass did not stop midway with rows committed"
        assert partial["examples"] + partial["requests_owed"] == 40
        assert first_run < 40, "requests went on being sent after the budget ran out"
        run(cfg.model_copy(update={"time_budget_minutes": None}))
    finally:
        srv.shutdown()
    plan, ex, rj = resolved(out)
    assert len(ex) == 40 and not rj
    for path, data in finished.items():
        assert path.read_bytes() == data, f"{path.name}, finished before the budget ran out, was rewritten"
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-2]["owed"] == partial["requests_owed"] and runs[-1]["examples"] == partial["requests_owed"]
    assert "partial" not in json.loads((out / "manifest.json").read_text())
