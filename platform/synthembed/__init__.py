"""synthembed: decoder LLM -> text embedder (synthetic data, LoRA contrastive training, mteb eval, serving)."""

__version__ = "0.1.0"
