"""Model loading, instruction formatting and the shared `Embedder`."""

from synthembed.model.embedder import Embedder, ModelConfig
from synthembed.model.formatting import QUERY_TEMPLATE, format_text, format_texts
from synthembed.model.loading import resolve_model_dir

__all__ = ["Embedder", "ModelConfig", "QUERY_TEMPLATE", "format_text", "format_texts", "resolve_model_dir"]
