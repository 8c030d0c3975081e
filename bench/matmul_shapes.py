"""How much of the square-matmul roofline can a small model's own matmuls reach?

The benchmarks' roofline is a 2048^3 matmul (bench/roofline.py). Gemma 3 270M's projections are thin
(hidden 640): x[M, 640] @ W[640, 2048] and the like. This times `F.linear` at each distinct projection
shape of the model, at the M (tokens per forward pass) the benchmarks run, in the same run as the square
matmul, and reports the FLOP-weighted rate: the most a pass made only of these matmuls could reach, as a
fraction of the roofline the benchmarks divide by. Attention and elementwise work come on top.

M: 256 (a training micro-batch of 8 short texts), 2048 (an encode batch of 16 texts of ~128 tokens).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/matmul_shapes.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from roofline import matmul_flop_per_s  # noqa: E402

MODEL = "gemma3-270m"
TOKENS = (256, 2048)


def linear_rate(m: int, n_out: int, k_in: int, dtype, min_seconds: float = 0.5) -> float:
    import torch

    x, w = torch.randn(m, k_in, dtype=dtype), torch.randn(n_out, k_in, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    rates, begin = [], time.perf_counter()
    while len(rates) < 5 or time.perf_counter() - begin < min_seconds:
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        rates.append(2 * m * n_out * k_in / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    import torch

    from synthembed.model import Embedder

    torch.set_num_threads(2)
    model = Embedder.load(MODEL, dtype="float32").model
    shapes = Counter(tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear))
    del model
    payload = {"model": MODEL, "shapes": {f"{n}x{k}": c for (n, k), c in shapes.items()}, "dtypes": {}}
    for dtype in ("bfloat16", "float32"):
        square = matmul_flop_per_s(dtype)
        rows = {}
        for m in TOKENS:
            per_shape = {f"{n}x{k}": linear_rate(m, n, k, getattr(torch, dtype)) for (n, k) in shapes}
            flop = {f"{n}x{k}": c * n * k for (n, k), c in shapes.items()}
            seconds = sum(flop[s] / per_shape[s] for s in flop)  # time of one token's worth, at each rate
            weighted = sum(flop.values()) / seconds
            rows[str(m)] = {"per_shape_flop_per_s": per_shape, "flop_weighted_flop_per_s": weighted,
                            "fraction_of_square_roofline": weighted / square["flop_per_s"]}
            print(f"{dtype} M={m}: model-shaped matmuls {weighted / 1e12:.2f} TFLOP/s = "
                  f"{weighted / square['flop_per_s']:.2f} of the 2048^3 roofline ({square['flop_per_s'] / 1e12:.2f})",
                  flush=True)
        payload["dtypes"][dtype] = {"square_2048": square, "tokens_per_pass": rows}
    print("wrote", write_result("matmul_shapes", payload))


if __name__ == "__main__":
    main()
