"""InfoNCE over in-batch documents (positives of the other rows + hard negatives), e5-mistral style.

For queries q_1..q_B and documents d_1..d_N (d_i is q_i's positive for i <= B; the rest are other
rows' positives and hard negatives):

    s_ij = cos(q_i, d_j) / tau
    L    = -1/B * sum_i [ s_ii - log sum_{j in V(i)} exp(s_ij) ]

V(i) holds every document except exact duplicates of q_i's positive (same text, j != i): with
classification-style data the label string repeats within a batch, and an unmasked repeat would be
a false negative pushing the query away from its own label.

Optionally (Qwen3-Embedding's rule) V(i) also drops documents that score above the positive by a margin m
in cosine, the likely false negatives of synthetic data (another row's positive that answers q_i too):

    j not in V(i)  if  j != i  and  cos(q_i, d_j) > cos(q_i, d_i) + m
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def false_negative_mask(cosines: torch.Tensor, margin: float) -> torch.Tensor:
    """[B, N] bool, True where document j beats query i's positive (column i) by more than `margin`."""
    positive = cosines.diagonal()[:, None]
    mask = cosines > positive + margin
    idx = torch.arange(cosines.shape[0], device=mask.device)
    mask[idx, idx] = False
    return mask


def duplicate_mask(pos_keys: torch.Tensor, doc_keys: torch.Tensor) -> torch.Tensor:
    """[B, N] bool, True where document j duplicates query i's positive but is not its target i."""
    mask = pos_keys[:, None] == doc_keys[None, :]
    idx = torch.arange(pos_keys.shape[0], device=mask.device)
    mask[idx, idx] = False  # the target column is never masked
    return mask


class InfoNCELoss(nn.Module):
    """Mean InfoNCE of B queries against N >= B documents; query i's positive is document i."""

    def __init__(self, temperature: float = 0.02, mask_duplicates: bool = True,
                 false_negative_margin: float | None = None):
        super().__init__()
        self.temperature = temperature
        self.mask_duplicates = mask_duplicates
        self.false_negative_margin = false_negative_margin

    def forward(
        self,
        queries: torch.Tensor,
        docs: torch.Tensor,
        pos_keys: torch.Tensor | None = None,
        doc_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if docs.shape[0] < queries.shape[0]:
            raise ValueError(f"need at least one document per query: {queries.shape[0]} queries, {docs.shape[0]} docs")
        # float32 similarities: bf16 logits divided by tau=0.02 lose most of their precision
        q = F.normalize(queries.float(), dim=-1)
        d = F.normalize(docs.float(), dim=-1)
        cosines = q @ d.T
        logits = cosines / self.temperature
        if self.mask_duplicates and pos_keys is not None and doc_keys is not None:
            logits = logits.masked_fill(duplicate_mask(pos_keys, doc_keys), float("-inf"))
        if self.false_negative_margin is not None:
            # the mask is a choice of columns, not something to differentiate through
            mask = false_negative_mask(cosines.detach(), self.false_negative_margin)
            logits = logits.masked_fill(mask, float("-inf"))
        targets = torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, targets)
