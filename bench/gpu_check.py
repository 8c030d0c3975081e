"""The GPU device check: our training step vs sentence-transformers on a Mistral-7B-architecture model.

One command, one JSON, no Ray, no hub, no downloads: the model is built with random weights from
transformers' `MistralConfig()` (whose defaults are Mistral 7B's dimensions), in bf16 on the GPU, with LoRA
r16 on all linear layers and gradient checkpointing. Both sides train on the same batches of random token
ids (queries + positives + hard negatives, every text `--max-length` tokens ending in EOS), in GradCache
chunks of `--chunk` texts, with the same pooling (last token), the same loss (InfoNCE at tau 0.02 =
`CachedMultipleNegativesRankingLoss(scale=50)`) and AdamW:

  ours  synthembed's training step (`ContrastiveStep`, the one Ray Train workers run with backend local)
  st    sentence-transformers' CachedMultipleNegativesRankingLoss on the same backbone

LoRA B starts at zero, so the first step of each side is the base model on the same batch: the two first
losses must agree, which shows the sides compute the same thing. It reports examples/s (queries per
second, median after one warm-up step), peak GPU memory, the ratio ours / st, and a bf16-vs-fp32 check of
loss and gradients on a small model of the same architecture.

    python bench/gpu_check.py --out $OUT/gpu_check.json          # on the GPU machine (<= 8 minutes)
    python bench/gpu_check.py --tiny --out /tmp/gpu_check.json   # a 2-layer model on CPU: CI runs this

Needs torch, transformers, peft, sentence-transformers, pyyaml and pydantic; `make gpu-check-wheels`
puts pydantic's wheels in bench/gpu_wheels/ for a machine that lacks it (installed from there, offline).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

try:  # the only dependency a bare GPU image may lack: install it from the carried wheels
    import pydantic  # noqa: F401
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(REPO / "bench" / "gpu_wheels"), "pydantic"], check=True)

import torch  # noqa: E402

from synthembed.model import Embedder, ModelConfig  # noqa: E402
from synthembed.train.config import TrainConfig  # noqa: E402
from synthembed.train.data import ContrastiveBatch  # noqa: E402
from synthembed.train.gradcache import ContrastiveStep  # noqa: E402
from synthembed.train.lora import add_lora, make_embed_fn, trainable_parameters  # noqa: E402
from synthembed.train.loss import InfoNCELoss  # noqa: E402

TEMPERATURE = 0.02
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)


def mistral_config(tiny: bool):
    from transformers import MistralConfig

    return MistralConfig(**TINY) if tiny else MistralConfig()  # MistralConfig() = Mistral 7B's dims


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over the model's vocabulary: the sides get token ids, never text; it is
    only there because `Embedder` and sentence-transformers need a tokenizer with an EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   unk_token="<unk>")


def build_model(config, dtype: torch.dtype, device: torch.device, seed: int = 0):
    from transformers import AutoModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def random_batches(n: int, queries: int, length: int, vocab: int, seed: int) -> list[list[list[int]]]:
    """n steps of [queries..., positives..., hard negatives...] id lists, each ending in EOS (id 2)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(3, vocab, (length - 1,), generator=g).tolist() + [2] for _ in range(3 * queries)]
            for _ in range(n)]


def train_config(args, precision: str) -> TrainConfig:
    return TrainConfig(lora={"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
                       gradient_checkpointing=True, precision=precision, chunk_size=args.chunk,
                       temperature=TEMPERATURE, mask_duplicates=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _timed(steps, fn, device) -> dict:
    losses, seconds = [], []
    for batch in steps:
        _sync(device)
        t0 = time.perf_counter()
        losses.append(fn(batch))
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    return {"losses": losses, "step_seconds": [round(s, 4) for s in seconds]}


def ours(model, tokenizer, batches, args, dtype: torch.dtype | None, device) -> tuple[dict, torch.nn.Module]:
    """Our step on `model`; returns the figures and the backbone with LoRA removed again."""
    q = args.batch
    embedder = Embedder(model, tokenizer, ModelConfig(max_length=args.max_length))
    add_lora(embedder, train_config(args, "bf16" if dtype is not None else "float32"))
    params = trainable_parameters(embedder.model)
    opt = torch.optim.AdamW(params, lr=1e-4)
    step = ContrastiveStep(make_embed_fn(embedder, dtype), InfoNCELoss(TEMPERATURE, mask_duplicates=False),
                           args.chunk, device)

    def one(texts):
        keys = torch.arange(3 * q)  # every document distinct
        loss = step(ContrastiveBatch(texts[:q], texts[q:], keys[:q], keys))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    _reset_memory(device)
    out = _timed(batches, one, device)
    out["peak_gib"] = _peak_gib(device)
    return out, embedder.model.unload()


def sentence_transformers_side(model, tokenizer, batches, args, dtype: torch.dtype | None, device, work: Path):
    import contextlib

    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss
    from sentence_transformers.models import Pooling, Transformer

    # A Transformer module needs a folder to load; it gets a 1-layer stand-in, then our backbone.
    stand_in = work / "st-stand-in"
    build_model(mistral_config(True), torch.float32, torch.device("cpu")).save_pretrained(stand_in)
    tokenizer.save_pretrained(stand_in)
    transformer = Transformer(str(stand_in), max_seq_length=args.max_length)
    transformer.auto_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                             target_modules="all-linear", bias="none"))
    transformer.auto_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    transformer.auto_model.train()
    st = SentenceTransformer(modules=[transformer, Pooling(model.config.hidden_size, pooling_mode="lasttoken")],
                             device=str(device))
    loss_fn = CachedMultipleNegativesRankingLoss(st, scale=1.0 / TEMPERATURE, mini_batch_size=args.chunk)
    opt = torch.optim.AdamW([p for p in st.parameters() if p.requires_grad], lr=1e-4)
    q = args.batch
    cast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext

    def one(texts):
        features = []
        for col in (texts[:q], texts[q : 2 * q], texts[2 * q :]):
            ids = torch.tensor(col, device=device)
            features.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        with cast():  # the cached loss replays its chunks inside backward(): autocast there too
            loss = loss_fn(features, None)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    _reset_memory(device)
    out = _timed(batches, one, device)
    out["peak_gib"] = _peak_gib(device)
    return out


def bf16_vs_fp32(args, device) -> dict:
    """Loss and LoRA gradients of one step on a small model of the same architecture, bf16 vs fp32."""
    config = mistral_config(True)
    tok = word_tokenizer(config.vocab_size)
    batch = random_batches(1, 4, min(args.max_length, 64), config.vocab_size, seed=7)[0]
    results = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        embedder = Embedder(build_model(config, torch.float32, device), tok, ModelConfig(max_length=64))
        add_lora(embedder, train_config(args, "bf16" if dtype else "float32"))
        torch.manual_seed(1)
        for n, p in embedder.model.named_parameters():  # non-zero B: gradients reach A too
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        step = ContrastiveStep(make_embed_fn(embedder, dtype), InfoNCELoss(TEMPERATURE, mask_duplicates=False),
                               2, device)
        keys = torch.arange(12)
        loss = step(ContrastiveBatch(batch[:4], batch[4:], keys[:4], keys))
        grad = torch.cat([p.grad.flatten().float() for p in trainable_parameters(embedder.model)])
        results[name] = (loss, grad)
    (l32, g32), (l16, g16) = results["fp32"], results["bf16"]
    rel = abs(l16 - l32) / abs(l32)
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0).item()
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": rel, "grad_cosine": cos,
            "ok": rel < 0.02 and cos > 0.99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model on CPU (CI)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (plus one warm-up)")
    parser.add_argument("--batch", type=int, default=None, help="queries per step (each brings 2 documents)")
    parser.add_argument("--chunk", type=int, default=None, help="texts per GradCache chunk")
    parser.add_argument("--max-length", type=int, default=None)
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if gpu else "cpu")
    args.steps = args.steps or 3
    args.batch = args.batch or (32 if gpu else 4)
    args.chunk = args.chunk or (16 if gpu else 4)
    args.max_length = args.max_length or (512 if gpu else 32)
    dtype = torch.bfloat16 if gpu else None  # tiny on CPU: fp32, so the first losses must agree closely
    started = time.time()

    config = mistral_config(args.tiny)
    tokenizer = word_tokenizer(config.vocab_size)
    model = build_model(config, torch.bfloat16 if dtype else torch.float32, device)
    params = sum(p.numel() for p in model.parameters())
    batches = random_batches(args.steps + 1, args.batch, args.max_length, config.vocab_size, seed=0)
    work = (args.out.parent if args.out else Path("/tmp")) / "gpu-check-work"
    work.mkdir(parents=True, exist_ok=True)
    our, model = ours(model, tokenizer, batches, args, dtype, device)
    peer = sentence_transformers_side(model, tokenizer, batches, args, dtype, device, work)
    for side in (our, peer):
        side["examples_per_s"] = args.batch / statistics.median(side["step_seconds"][1:])
    report = {
        "device": "cuda" if gpu else "cpu",
        "gpu_figure": gpu,
        "note": None if gpu else "CPU --tiny run: a check that the script works, NOT a GPU figure",
        "gpu_name": torch.cuda.get_device_name(device) if gpu else None,
        "machine": platform.machine(), "cpu": platform.processor() or None, "python": platform.python_version(),
        "commit": _commit(),
        "versions": _versions(),
        "model": {"architecture": "MistralModel (random weights)", "parameters": params,
                  "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
                  "dtype": "bf16" if dtype else "fp32", "lora": "r16 all-linear", "gradient_checkpointing": True},
        "batch": {"queries": args.batch, "texts_per_step": 3 * args.batch, "max_length": args.max_length,
                  "chunk": args.chunk, "timed_steps": args.steps, "warmup_steps": 1},
        "ours": our, "st_cached_mnrl": peer,
        "ratio": our["examples_per_s"] / peer["examples_per_s"],
        "memory_ratio": (our["peak_gib"] / peer["peak_gib"]) if gpu else None,
        "first_loss_diff": abs(our["losses"][0] - peer["losses"][0]),
        "bf16_vs_fp32": bf16_vs_fp32(args, device),
        "seconds": round(time.time() - started, 1),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def _commit() -> str | None:
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return res.stdout.strip() or None


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "sentence-transformers")}


if __name__ == "__main__":
    main()
