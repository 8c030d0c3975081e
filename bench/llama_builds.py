"""Raw llama.cpp generation speed of several llama-cpp-python builds, side by side in one run.

Each build (a wheel) is unpacked into its own folder and timed in a child process (two builds cannot share
one), interleaved over repeats so load changes hit every build alike: SmolLM2-135M-Instruct Q4_1 (the
embedded default), 2 threads, greedy, a fixed prompt, `--tokens` generated tokens; reported as generated
tokens per second (prompt evaluation is timed apart). A build made with GGML_BACKEND_DL keeps its CPU
variants in `bin/`, which llama-cpp-python never loads by itself; the child loads them explicitly with
`ggml_backend_load_all_from_path` (the best variant for this CPU is picked by ggml) and reports which.

    python bench/llama_builds.py portable=/path/a.whl native=/path/n.whl [--tokens 128 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

_CHILD = r"""
import ctypes, json, sys, time, os, io, contextlib
site, gguf, n_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
variants = os.path.join(site, "bin")
loaded = "built in"
if os.path.isdir(variants):
    g = ctypes.CDLL(os.path.join(site, "llama_cpp", "lib", "libggml.so"))
    g.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    g.ggml_backend_load_all_from_path(variants.encode())
    g.ggml_backend_reg_count.restype = ctypes.c_size_t
    loaded = f"{g.ggml_backend_reg_count()} backend(s) from bin/"
from llama_cpp import Llama
m = Llama(model_path=gguf, n_threads=2, n_ctx=512, verbose=False, seed=0)
prompt = "Once upon a time, in a small village by the sea, there lived an old lighthouse keeper who"
m(prompt, max_tokens=4, temperature=0)  # warm-up
m.reset()  # no prompt-cache reuse: every build evaluates the whole prompt
t0 = time.perf_counter()
out = m(prompt, max_tokens=n_tokens, temperature=0)
wall = time.perf_counter() - t0
t1 = time.perf_counter(); m.reset(); m.eval(m.tokenize(prompt.encode())); prompt_s = time.perf_counter() - t1
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "wall_s": wall,
                  "prompt_tokens": out["usage"]["prompt_tokens"], "prompt_eval_s": prompt_s,
                  "variants": loaded, "text": out["choices"][0]["text"][:80]}))
"""


def unpack(wheel: Path, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir", "--target",
                    str(into), str(wheel)], check=True)
    return into


def measure(builds: dict[str, Path], tokens: int, repeats: int) -> dict:
    from common import spread

    sys.path.insert(0, str(ROOT / "platform"))
    from synthembed.packaged import gguf_path

    gguf = str(gguf_path("smollm2-135m"))
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory() as tmp:
        sites = {name: unpack(whl, Path(tmp) / name) for name, whl in builds.items()}
        for rep in range(repeats):
            for name, site in sites.items():
                proc = subprocess.run([sys.executable, "-c", _CHILD, str(site), gguf, str(tokens)],
                                      capture_output=True, text=True, cwd=tmp, timeout=600)
                if proc.returncode != 0:
                    runs[name].append({"error": f"exit {proc.returncode}: {proc.stderr[-300:]}"})
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["tokens_per_s"] = r["tokens"] / r["wall_s"]
                r["prompt_tokens_per_s"] = r["prompt_tokens"] / r["prompt_eval_s"]
                runs[name].append(r)
                print(f"rep {rep} {name:10s} {r['tokens_per_s']:7.1f} tok/s  prompt {r['prompt_tokens_per_s']:7.1f} "
                      f"tok/s  ({r['variants']})", flush=True)
    result = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        result[name] = {
            "wheel": builds[name].name, "variants": ok[0]["variants"] if ok else None,
            "errors": [r["error"] for r in rs if "error" in r],
            "tokens_per_s": spread([r["tokens_per_s"] for r in ok]) if ok else None,
            "prompt_tokens_per_s": spread([r["prompt_tokens_per_s"] for r in ok]) if ok else None,
            "same_text": len({r["text"] for r in ok}) <= 1,
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+", help="name=path/to/wheel")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    builds = {kv.split("=", 1)[0]: Path(kv.split("=", 1)[1]) for kv in args.builds}
    print(json.dumps(measure(builds, args.tokens, args.repeats), indent=2))


if __name__ == "__main__":
    main()
