"""The floating-point type a stage computes in: decided at run time, in the process that computes.

    dtype / precision "auto"   inference (encode, evaluate, serve)   training
    CUDA                       bfloat16                              bf16 autocast, fp32 LoRA weights
    CPU with native bf16       bfloat16                              bf16 autocast, fp32 LoRA weights
    other CPU                  float32                               float32

"Native bf16" means the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), which oneDNN
uses for bf16 matmuls (measured 2-7x fp32 on this project's machine kinds). Without them bf16 is emulated
and slower than fp32. Machines of one kind differ here, so the answer is probed on the machine that runs
the stage, never fixed at build time. An explicit dtype or precision always wins.

`SYNTHEMBED_AUTO_DTYPE=float32` makes "auto" mean float32 on every device: for a run that must be
bit-comparable across machines whose CPUs differ, and for the test suite's exactness checks.
"""

from __future__ import annotations

import functools
import os

import torch

AUTO_DTYPE_ENV = "SYNTHEMBED_AUTO_DTYPE"


@functools.cache
def cpu_native_bf16() -> bool:
    """True when this CPU has bf16 matmul instructions (AVX512-BF16 or AMX)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:  # torch's cpuinfo probes (any OS); private, hence the /proc/cpuinfo fallback
        return any(getattr(torch.cpu, p)() for p in probes if hasattr(torch.cpu, p))
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _auto_low_precision(device: torch.device) -> bool:
    forced = os.environ.get(AUTO_DTYPE_ENV, "").strip()
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ValueError(f"{AUTO_DTYPE_ENV}={forced!r}: use float32 or bfloat16 (or unset it)")
        return forced == "bfloat16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_native_bf16())


def inference_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`model.dtype` -> the torch dtype weights are loaded and run in."""
    if requested == "auto":
        return torch.bfloat16 if _auto_low_precision(device) else torch.float32
    return getattr(torch, requested)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """`train.precision` -> the autocast dtype of the training step (None: plain float32)."""
    if precision == "bf16" or (precision == "auto" and _auto_low_precision(device)):
        return torch.bfloat16
    return None


def describe(device: torch.device) -> str:
    """One line for logs and benchmark files: what "auto" picks here, and why."""
    if device.type == "cuda":
        return "cuda: auto = bfloat16"
    native = cpu_native_bf16()
    pick = inference_dtype("auto", device)
    return f"cpu native bf16 {'yes' if native else 'no'}: auto = {str(pick).removeprefix('torch.')}"
