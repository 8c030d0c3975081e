"""Cross-worker pieces: gather embeddings keeping the local gradient, and sum gradients.

Every worker gathers all queries and documents, computes the SAME full-batch loss, and backpropagates
only through its own (local) embeddings: the gathered copies of other workers' embeddings are
constants. Worker r thus holds dL/dtheta restricted to the paths through its own examples, and the
sum over workers is exactly the full-batch gradient (`all_reduce_grads`). No loss rescaling, no DDP
averaging to undo.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size), (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_keep_local(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from all workers along dim 0 (rank order); the local slice keeps its autograd graph.

    Shapes may differ in dim 0 across workers (hard negatives are optional per row).
    """
    rank, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    width = max(sizes)
    padded = x.detach()
    if x.shape[0] < width:
        padded = torch.cat([padded, padded.new_zeros((width - x.shape[0], *x.shape[1:]))])
    out = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(out, padded.contiguous())
    parts = [o[:s] for o, s in zip(out, sizes)]
    parts[rank] = x  # the only part whose gradient this worker can (and must) propagate
    return torch.cat(parts)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over workers, in one flat buffer (LoRA gradients are small)."""
    _, size = world()
    if size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
