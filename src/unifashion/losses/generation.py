"""Image-grounded text generation (ITG) loss, paper eq. 6 (phase 1) and eq. 11 (phase 2).

L_ITG = - sum_t log p(w_t | w_<t, TSA(Z), instruction), averaged over the answer tokens of the
batch. Every position that is not an answer token (queries, prompt, instruction, padding) carries
the label ``ignore_index`` and contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unifashion.losses import distributed

IGNORE_INDEX = -100
"""Label of positions that are not predicted (same value as PyTorch's and HF's default)."""


def itg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy over the answer tokens (eqs. 6 / 11).

    Position ``t`` of ``logits`` predicts the token at position ``t + 1`` of ``labels``; the loss
    is the mean over all labelled (not ``ignore_index``) targets of the batch, so long captions
    weigh more than short ones (token-level mean, as LAVIS and HF causal LMs do). Under DDP the mean
    is over the answer tokens of the whole global batch (`distributed.mean_denominator`), so that
    DDP's average of the per-process losses equals one process on the concatenated batch.

    Args:
        logits: float (B, L, V), the LM's output logits for the full input sequence.
        labels: long (B, L), the input token id at answer positions and ``ignore_index``
            elsewhere (not yet shifted).
        ignore_index: label value of positions without a target.

    Returns:
        ``{"itg": loss}``, a scalar tensor (float32).

    Raises:
        ValueError: shapes disagree, or no position of the batch carries a label.
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"itg_loss expects logits (B, L, V) and labels (B, L); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1, :].float()  # (B, L-1, V)
    shift_labels = labels[:, 1:]  # (B, L-1)
    if not bool((shift_labels != ignore_index).any()):
        raise ValueError("itg_loss: no answer token carries a label (every label is ignore_index)")
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
    )
    # token mean over the *global* batch under DDP (processes hold different numbers of answer tokens)
    count = (shift_labels != ignore_index).sum().to(total.dtype)
    return {"itg": total / distributed.mean_denominator(count)}
