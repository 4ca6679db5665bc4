"""Composed contrastive loss of phase 2 (UniFashion eq. 10, its two ITC terms), as SPRC trains it.

The composed query e_cls (the projected text [CLS] output of the bi-directional pass of reference
image + modifying text, eq. 9) is contrasted with the batch's gallery-side features, one direction
(query -> gallery, the retrieval direction; SPRC):

- ``ITC(e_cls, Z_T)``: against the target images' query embeddings, s = max_q e_cls . Z_T[q] / tau;
- ``ITC(e_cls, Z_C)``: against the target captions' text-only [CLS] features, s = e_cls . Z_C / tau.

Positives: every gallery item of the batch with the query's target id (a target that occurs twice in
a batch is a positive of both queries), with LAVIS-style soft targets and label smoothing. Under
DDP the local queries are scored against the gallery features gathered from every process (with
gradient), through losses/distributed.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.losses import distributed
from unifashion.losses.contrastive import positive_mask


@dataclass
class ComposedItcResult:
    """What one composed ITC term computes; the composed ITM mines hard negatives from the similarities.

    loss: scalar.
    sim_q2g: (B, W*B) local queries vs all gathered gallery items, divided by the temperature.
    sim_g2q: (B, W*B) local gallery items vs all gathered queries, divided by the temperature
        (no gradient: used only for negative mining).
    positives: (B, W*B) bool, same target id.
    """

    loss: torch.Tensor
    sim_q2g: torch.Tensor
    sim_g2q: torch.Tensor
    positives: torch.Tensor


def _similarity(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """query (B, E) vs gallery (N, Q, E) or (N, E) -> (B, N), max over the Q query embeddings (eq. 3)."""
    if gallery.dim() == 2:
        return query @ gallery.t()  # (B, N)
    return torch.einsum("be,nqe->bnq", query, gallery).amax(dim=-1)  # (B, N)


class ComposedItcLoss(nn.Module):
    """One composed ITC term (eq. 10): cross-entropy of the composed query over the batch's gallery.

    Args:
        label_smoothing: eps of the soft targets (0: SPRC's plain cross-entropy).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def compute(
        self,
        query_feat: torch.Tensor,
        gallery_feats: torch.Tensor,
        temperature: torch.Tensor | float,
        target_ids: torch.Tensor | None = None,
    ) -> ComposedItcResult:
        """The loss and the similarities.

        Args:
            query_feat: (B, E) L2-normalised composed features e_cls.
            gallery_feats: (B, Q, E) target query embeddings Z_T, or (B, E) caption features Z_C,
                L2-normalised; row i is query i's target.
            temperature: tau (the encoder's learnable temperature).
            target_ids: (B,) long ids of the targets (equal ids are positives of each other); None:
                only the diagonal.
        """
        if query_feat.dim() != 2 or gallery_feats.dim() not in (2, 3):
            raise ValueError(
                f"ComposedItcLoss expects query_feat (B, E) and gallery_feats (B, Q, E) or (B, E), got "
                f"{tuple(query_feat.shape)} and {tuple(gallery_feats.shape)}"
            )
        batch = query_feat.shape[0]
        if gallery_feats.shape[0] != batch or gallery_feats.shape[-1] != query_feat.shape[1]:
            raise ValueError(
                f"ComposedItcLoss: query_feat {tuple(query_feat.shape)} and gallery_feats "
                f"{tuple(gallery_feats.shape)} disagree on batch size or embedding dim"
            )
        gallery_all = distributed.gather_features(gallery_feats, with_grad=True)  # (W*B, [Q,] E)
        query_all = distributed.gather_features(query_feat, with_grad=False)  # (W*B, E)
        ids_all = distributed.gather_ids(target_ids) if target_ids is not None else None
        sim_q2g = _similarity(query_feat, gallery_all) / temperature  # (B, W*B)
        with torch.no_grad():
            if gallery_feats.dim() == 2:
                sim_g2q = gallery_feats @ query_all.t()  # (B, W*B)
            else:
                sim_g2q = torch.einsum("bqe,ne->bnq", gallery_feats, query_all).amax(dim=-1)  # (B, W*B)
            sim_g2q = sim_g2q / temperature
        positives = positive_mask(target_ids, ids_all, batch, query_feat.device)  # (B, W*B)
        targets = positives.float() / positives.float().sum(dim=1, keepdim=True)  # (B, W*B)
        smoothed = (1.0 - self.label_smoothing) * targets + self.label_smoothing / targets.shape[1]
        loss = -(F.log_softmax(sim_q2g, dim=1) * smoothed).sum(dim=1).mean()
        return ComposedItcResult(loss, sim_q2g, sim_g2q, positives)


def ids_from_strings(ids: list[str]) -> torch.Tensor:
    """Stable long ids of image id strings (Fashion-IQ ASINs), equal on every process (for `gather_ids`).

    Args:
        ids: B id strings.

    Returns:
        (B,) long: the first 8 bytes of each string's BLAKE2b digest, as a signed integer.
    """
    import hashlib

    values = [int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "big", signed=True)
              for s in ids]
    return torch.tensor(values, dtype=torch.long)
