"""Invariants of the shared Embedder: EOS, padding, instruction formatting, batching order, adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthembed.model import Embedder, ModelConfig, format_text
from synthembed.model.formatting import format_texts

TEXTS = [
    "A short one.",
    "hi",
    "This text is quite a bit longer than the others, so it forces padding on every other row of the batch.",
    "Medium length sentence about cats and dogs.",
]


# ------------------------------------------------------------------------------------------------ EOS
def test_eos_appended_exactly_once(tiny_embedder):
    for ids in tiny_embedder.tokenize(TEXTS):
        assert ids[-1] == tiny_embedder.eos_id
        assert ids.count(tiny_embedder.eos_id) == 1


def test_eos_survives_truncation(tiny_embedder):
    (ids,) = tiny_embedder.tokenize(["x" * 500], max_length=16)
    assert len(ids) == 16
    assert ids[-1] == tiny_embedder.eos_id and ids.count(tiny_embedder.eos_id) == 1


def test_text_ending_in_eos_string_still_has_one_eos(tiny_embedder):
    eos = tiny_embedder.tokenizer.eos_token
    (ids,) = tiny_embedder.tokenize([f"already terminated{eos}"])
    assert ids[-1] == tiny_embedder.eos_id and ids.count(tiny_embedder.eos_id) == 1


def test_tokenizer_that_appends_eos_itself_gets_no_second_one(tiny_embedder):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    core = tiny_embedder.tokenizer.backend_tokenizer.__class__.from_str(tiny_embedder.tokenizer.backend_tokenizer.to_str())
    vocab = core.get_vocab()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert tok("abc")["input_ids"][-1] == tok.eos_token_id  # the premise: this tokenizer adds EOS
    emb = Embedder(tiny_embedder.model, tok, tiny_embedder.config)
    for ids in emb.tokenize(TEXTS, max_length=20):
        assert ids[-1] == emb.eos_id and ids.count(emb.eos_id) == 1 and len(ids) <= 20


# -------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_an_embedding(tiny_embedder, side):
    alone = np.stack([tiny_embedder.encode([t], batch_size=1, normalize=False)[0] for t in TEXTS])
    ids = tiny_embedder.tokenize(TEXTS)
    with torch.inference_mode():
        batched = tiny_embedder.embed(**tiny_embedder.collate(ids, padding_side=side)).numpy()
    assert np.abs(alone - batched).max() < 1e-5


def test_pooled_position_is_the_eos_for_both_sides(tiny_embedder):
    ids = tiny_embedder.tokenize(TEXTS)
    for side in ("left", "right"):
        batch = tiny_embedder.collate(ids, padding_side=side)
        mask = batch["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
        assert (batch["input_ids"][torch.arange(len(ids)), last] == tiny_embedder.eos_id).all()


@pytest.mark.slow
def test_padding_invariance_on_a_real_model(smollm_embedder):
    alone = np.stack([smollm_embedder.encode([t], normalize=False)[0] for t in TEXTS])
    ids = smollm_embedder.tokenize(TEXTS)
    for side in ("left", "right"):
        with torch.inference_mode():
            batched = smollm_embedder.embed(**smollm_embedder.collate(ids, padding_side=side)).numpy()
        # relative to the scale of raw hidden states (norms in the tens to hundreds)
        scale = np.abs(alone).max()
        assert np.abs(alone - batched).max() / scale < 1e-5, side


# ---------------------------------------------------------------------------------------- instruction
def test_instruction_formats_queries_only():
    assert format_text("what is rope?", None) == "what is rope?"
    assert format_text("what is rope?", "  ") == "what is rope?"
    assert format_text("what is rope?", "Retrieve papers.") == "Instruct: Retrieve papers.\nQuery: what is rope?"
    assert format_texts(["a", "b"], ["Do X", None]) == ["Instruct: Do X\nQuery: a", "b"]
    with pytest.raises(ValueError, match="2 texts but 1 instructions"):
        format_texts(["a", "b"], ["Do X"])
    with pytest.raises(TypeError, match="must be strings"):
        format_text(None, "x")


def test_tokenize_applies_the_instruction(tiny_embedder):
    instr = "Retrieve semantically similar text."
    assert tiny_embedder.tokenize(["cats"], instr) == tiny_embedder.tokenize([f"Instruct: {instr}\nQuery: cats"])
    assert tiny_embedder.tokenize(["cats"], None) == tiny_embedder.tokenize(["cats"])
    with_instr = tiny_embedder.encode(["cats"], instruction=instr)
    without = tiny_embedder.encode(["cats"])
    assert np.abs(with_instr - without).max() > 1e-3


# ----------------------------------------------------------------------------------------- batching
def test_length_sorted_batching_keeps_input_order(tiny_embedder):
    one_by_one = np.stack([tiny_embedder.encode([t])[0] for t in TEXTS])
    batched = tiny_embedder.encode(TEXTS, batch_size=3)
    assert np.abs(one_by_one - batched).max() < 1e-5
    assert batched.dtype == np.float32
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    raw = tiny_embedder.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_token_budget_batches_close_at_the_budget_or_the_count():
    from synthembed.model.batches import length_sorted_batches, padded_tokens

    lengths = [5, 30, 10, 30, 7, 12, 3]
    batches = length_sorted_batches(lengths, max_items=3, max_tokens=64)
    # longest first; a batch's first item sets its width: 30 -> 2 fit in 64, 12 -> 3 (count cap), then the rest
    assert [list(b) for b in batches] == [[1, 3], [5, 2, 4], [0, 6]]
    assert all(padded_tokens([[0] * lengths[i] for i in b]) <= 64 for b in batches)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(lengths)))
    # an item longer than the budget still gets a batch of its own; no budget: the count alone
    assert [list(b) for b in length_sorted_batches([100, 1], 4, 50)] == [[0], [1]]
    assert [len(b) for b in length_sorted_batches(lengths, 3)] == [3, 3, 1]


def test_token_budget_encoding_equals_count_batches(tiny_embedder):
    by_count = tiny_embedder.encode(TEXTS, batch_size=2)
    by_tokens = tiny_embedder.encode(TEXTS, batch_size=64, max_batch_tokens=40)
    assert np.abs(by_count - by_tokens).max() < 1e-5


def test_encode_rejects_a_bare_string(tiny_embedder):
    with pytest.raises(TypeError, match="list of texts"):
        tiny_embedder.encode("not a list")


def test_max_length_without_room_for_text_is_rejected(tiny_embedder):
    floor = len(tiny_embedder.prefix_ids) + 2  # prefix, one token of text, EOS
    with pytest.raises(ValueError, match=f"max_length must be >= {floor}"):
        tiny_embedder.tokenize(["x"], max_length=floor - 1)
    assert len(tiny_embedder.tokenize(["many words of text here"], max_length=floor)[0]) == floor


# ----------------------------------------------------------------------------- shared prefix, once
INSTRUCTION = "Retrieve semantically similar text."


def test_shared_prefix_length_leaves_every_sequence_its_last_token():
    from synthembed.model.batches import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 9], [1, 2, 3, 4, 5, 9]]) == 3
    assert shared_prefix_length([[1, 2, 3, 9], [1, 2, 3, 9]]) == 3  # identical: the EOS still runs per text
    assert shared_prefix_length([[1, 2, 9], [1, 2, 3, 4, 9]]) == 2
    assert shared_prefix_length([[1, 2, 9], [7, 2, 9]]) == 0
    assert shared_prefix_length([]) == 0


def _counting_input_tokens(embedder):
    """A list that collects how many token positions each forward pass embeds."""
    seen: list[int] = []
    embedder.model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    return seen


@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_prefix_gives_the_embeddings_of_whole_texts(side):
    whole = Embedder.load(ModelConfig(source="tiny-llama", padding_side=side, share_prefix=False))
    shared = Embedder.load(ModelConfig(source="tiny-llama", padding_side=side))
    seen = _counting_input_tokens(shared)
    for instruction in (INSTRUCTION, None, [INSTRUCTION, None, INSTRUCTION, "Find the answer."]):
        a = whole.encode(TEXTS, instruction, normalize=False)
        b = shared.encode(TEXTS, instruction, normalize=False)
        assert np.abs(a - b).max() < 1e-5, instruction
    # the first call (one shared instruction) ran its prefix once, as a batch of one, then the texts' rest
    ids = shared.tokenize(TEXTS, INSTRUCTION)
    prefix = len(f"Instruct: {INSTRUCTION}\nQuery: ") + len(shared.prefix_ids)  # a character tokenizer
    assert seen[:2] == [prefix, len(TEXTS) * (max(map(len, ids)) - prefix)]


def test_shared_prefix_through_a_lora_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from synthembed.model.loading import resolve_model_dir

    base = AutoModel.from_pretrained(resolve_model_dir("tiny-llama"))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
                   ).save_pretrained(tmp_path / "adapter")
    config = ModelConfig(source="tiny-llama", adapter=str(tmp_path / "adapter"))
    a = Embedder.load(config.model_copy(update={"share_prefix": False})).encode(TEXTS, INSTRUCTION)
    b = Embedder.load(config).encode(TEXTS, INSTRUCTION)
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.slow
def test_shared_prefix_on_gemma_past_its_sliding_window():
    """Gemma 3 mixes sliding-window and global layers; the prefix's cache must serve both, also when the
    texts run past the window. A random Gemma 3 with an 8-token window and the real Gemma tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from synthembed.model.loading import resolve_model_dir

    folder = resolve_model_dir("gemma3-270m")
    config = AutoConfig.from_pretrained(folder)
    config.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 8,
                   "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]})
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    whole = Embedder(model, tokenizer, ModelConfig(share_prefix=False, max_length=64))
    shared = Embedder(model, tokenizer, ModelConfig(max_length=64))
    a = whole.encode(TEXTS, INSTRUCTION, normalize=False)
    b = shared.encode(TEXTS, INSTRUCTION, normalize=False)
    assert max(len(x) for x in shared.tokenize(TEXTS, INSTRUCTION)) > 3 * 8
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-5


@pytest.mark.slow
def test_shared_prefix_on_real_models(gemma_embedder, smollm_embedder):
    texts = TEXTS + ["Ein Mann spielt Gitarre.", "一个男人在弹吉他。"]
    for embedder in (gemma_embedder, smollm_embedder):
        whole = Embedder(embedder.model, embedder.tokenizer, embedder.config.model_copy(update={"share_prefix": False}))
        a = whole.encode(texts, INSTRUCTION)
        b = embedder.encode(texts, INSTRUCTION)
        assert float(np.min(np.sum(a * b, axis=1))) > 0.99999


# ------------------------------------------------------------------------------------------ adapter
def test_lora_adapter_loads_on_top_of_the_base(tmp_path, tiny_embedder):
    from peft import LoraConfig, get_peft_model

    from synthembed.model.loading import resolve_model_dir
    from transformers import AutoModel

    base = AutoModel.from_pretrained(resolve_model_dir("tiny-llama"))
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")

    with_adapter = Embedder.load(ModelConfig(source="tiny-llama", adapter=str(tmp_path / "adapter")))
    a = with_adapter.encode(TEXTS)
    b = tiny_embedder.encode(TEXTS)
    assert np.abs(a - b).max() > 1e-3  # the adapter changes the embedding

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        Embedder.load(ModelConfig(source="tiny-llama", adapter=str(tmp_path)))


@pytest.mark.slow
def test_compiled_backbone_gives_the_eager_embeddings():
    """model.compile: the graphs compiled at load serve shared-prefix, plain and single-text passes alike."""
    from torch._dynamo.utils import counters

    eager = Embedder.load(ModelConfig(source="tiny-llama"))
    compiled = Embedder.load(ModelConfig(source="tiny-llama", compile=True))
    assert compiled.model is not eager.model and hasattr(compiled.model, "_orig_mod")
    graphs = counters["stats"]["unique_graphs"]
    for instruction in (INSTRUCTION, None, [INSTRUCTION, None, INSTRUCTION, "Find the answer."]):
        a = eager.encode(TEXTS, instruction, normalize=False)
        b = compiled.encode(TEXTS, instruction, normalize=False)
        assert np.abs(a - b).max() < 1e-4, instruction
    one = compiled.encode(TEXTS[:1], INSTRUCTION, normalize=False)
    assert np.abs(one - eager.encode(TEXTS[:1], INSTRUCTION, normalize=False)).max() < 1e-4
    # serving runs every pass on a thread of its own (serve.batching.IdleBatcher)
    import concurrent.futures

    ids = compiled.tokenize(TEXTS, INSTRUCTION)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        on_thread = pool.submit(compiled.embed_ids, ids).result()
    assert np.abs(on_thread - eager.embed_ids(ids)).max() < 1e-4
    # the warm-up at load compiled every graph these calls need: none was compiled during them
    assert counters["stats"]["unique_graphs"] == graphs


def test_model_compile_is_for_inference_and_train_compile_for_training():
    from synthembed.train.config import TrainConfig
    from synthembed.train.lora import build_lora_embedder

    config = TrainConfig(model={"source": "tiny-llama", "compile": True}, lora={"r": 4, "alpha": 8})
    trainable = build_lora_embedder(config, torch.device("cpu"))
    # peft wrapped the plain backbone, and training runs it eagerly: model.compile is inference's switch
    assert not hasattr(trainable.model.get_base_model(), "_orig_mod")
    assert trainable.model._compiled_call_impl is None
    assert any(p.requires_grad for p in trainable.model.parameters())
    compiled = build_lora_embedder(config.model_copy(update={"compile": True}), torch.device("cpu"))
    assert compiled.model._compiled_call_impl is not None  # compiled in place, after LoRA wrapped the layers


def test_exporting_a_merged_model_never_compiles_it(tmp_path, monkeypatch):
    from synthembed.train.config import TrainConfig
    from synthembed.train.export import export_merged
    from synthembed.train.lora import build_lora_embedder

    config = TrainConfig(model={"source": "tiny-llama", "compile": True}, lora={"r": 4, "alpha": 8})
    build_lora_embedder(config, torch.device("cpu")).model.save_pretrained(tmp_path / "adapter")

    def refuse(self):
        raise AssertionError("export compiled the model")

    monkeypatch.setattr(Embedder, "compile", refuse)
    merged = export_merged(config.model, tmp_path / "adapter", tmp_path / "merged")
    assert Embedder.load(ModelConfig(source=str(merged))).encode(["a text"]).shape[0] == 1


def test_compile_without_a_cpp_compiler_names_the_setting_and_the_fix():
    import torch._inductor.config as inductor_config

    from synthembed.train.config import TrainConfig
    from synthembed.train.lora import build_lora_embedder

    config = TrainConfig(model={"source": "tiny-llama"}, lora={"r": 4, "alpha": 8}, compile=True)
    with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):  # inductor's compiler search list
        with pytest.raises(RuntimeError, match=r"model.compile: .*C\+\+ compiler.*install g\+\+"):
            Embedder.load(ModelConfig(source="tiny-llama", compile=True))
        with pytest.raises(RuntimeError, match=r"train.compile: .*set train.compile: false"):
            build_lora_embedder(config, torch.device("cpu"))
