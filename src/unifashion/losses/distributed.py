"""Every cross-process collective of the project, in one place.

All functions are the identity (or the single-process answer) when `torch.distributed` is not
available, not initialised, or has a world size of 1, so losses are written once and work the
same on one process and under DDP. No other module calls `torch.distributed` directly.

Requirements under DDP: every process passes tensors with the same number of rows (Lightning's
`DistributedSampler` pads the last batch to ensure this); `gather_ids` additionally pads the
second dimension (token sequences) to the longest one across processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

_local_only = 0  # depth of `local_only()` blocks


@contextmanager
def local_only() -> Iterator[None]:
    """Inside this block every function here behaves as on a single process (no collective).

    Validation uses it: its batches are dealt out whole to the processes (`data.sampling`), so each
    process computes the losses of its own batches exactly as one process would, and processes may
    run different numbers of batches (a collective per batch would then hang).
    """
    global _local_only
    _local_only += 1
    try:
        yield
    finally:
        _local_only -= 1


def is_distributed() -> bool:
    """True when a process group with more than one process is running (and not `local_only`)."""
    return not _local_only and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 when not distributed or inside `local_only`)."""
    if not _local_only and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank of this process (0 when not distributed or inside `local_only`)."""
    if not _local_only and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _check_same_rows(x: torch.Tensor) -> None:
    """Raise when processes disagree on the number of rows (all_gather needs equal shapes)."""
    rows = torch.tensor([x.shape[0]], device=x.device)
    all_rows = [torch.zeros_like(rows) for _ in range(world_size())]
    dist.all_gather(all_rows, rows)
    counts = [int(r.item()) for r in all_rows]
    if len(set(counts)) != 1:
        raise ValueError(
            f"gather: processes hold different batch sizes {counts}; pad the last batch "
            "(DistributedSampler(drop_last=False) pads) so every process has the same number of rows"
        )


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every process and returns this process's slice.

    Written here rather than using `torch.distributed.nn.all_gather`: on gloo its backward scatters into
    buffers made with `empty_like(grad)`, which keep the strides of non-contiguous gradients (e.g. from
    einsum) and so receive garbled values.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # (W*B, ...)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]  # (B, ...)


def gather_features(x: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Concatenate `x` over processes along dim 0, in rank order.

    Args:
        x: (B, ...) local tensor; every process must pass the same shape.
        with_grad: if True, gradients flow back to every process's `x` (the backward of
            the gather sums the incoming gradients over processes, so the
            local gradient is `world_size` times the gradient of the mean of the per-process losses,
            and DDP's gradient averaging restores it). If False the result is a constant.

    Returns:
        (W * B, ...) tensor; `x` itself on a single process.
    """
    if not is_distributed():
        return x
    _check_same_rows(x)
    if with_grad:
        return _GatherWithGrad.apply(x)  # (W*B, ...)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)  # (W*B, ...)


def gather_ids(x: torch.Tensor, pad_value: int = 0) -> torch.Tensor:
    """Concatenate integer tensors (product ids, token ids, attention masks) over processes, no grad.

    Args:
        x: (B,) or (B, L) local tensor. For (B, L) tensors the processes may have different L:
            every part is right-padded with `pad_value` to the longest L first.
        pad_value: fill value for the padding of the second dimension (pad token id, or 0 for masks).

    Returns:
        (W * B,) or (W * B, L_max) tensor; `x` itself on a single process.
    """
    if not is_distributed():
        return x
    if x.dim() not in (1, 2):
        raise ValueError(f"gather_ids expects a (B,) or (B, L) tensor, got shape {tuple(x.shape)}")
    _check_same_rows(x)
    if x.dim() == 2:
        length = torch.tensor([x.shape[1]], device=x.device)
        lengths = [torch.zeros_like(length) for _ in range(world_size())]
        dist.all_gather(lengths, length)
        longest = max(int(n.item()) for n in lengths)
        if longest > x.shape[1]:
            pad = x.new_full((x.shape[0], longest - x.shape[1]), pad_value)
            x = torch.cat([x, pad], dim=1)  # (B, L_max)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_denominator(count: torch.Tensor) -> torch.Tensor:
    """The denominator that turns a local sum into this process's share of a global mean.

    For a loss averaged over items whose number differs between processes (answer tokens), DDP
    averages the per-process losses; dividing each local sum by ``(sum of counts over processes) /
    world_size`` (instead of the local count) makes that average the mean over every item of the
    global batch, as one process on the concatenated batch computes it.

    Args:
        count: scalar local count (no gradient flows through it).

    Returns:
        ``count`` itself on a single process; otherwise ``all_reduce_sum(count) / world_size``.
    """
    if not is_distributed():
        return count
    total = count.detach().clone().to(torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total / world_size()).to(count.dtype if count.is_floating_point() else torch.float32)
