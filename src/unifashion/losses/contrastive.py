"""Image-text contrastive loss (ITC, eq. 3) of the Q-Former, as LAVIS trains BLIP-2.

sim(I, T) = max_q (z_q . t_cls) / tau over the Q query outputs z_q of the image and the text's
projected [CLS] feature t_cls (both L2-normalised), in both directions, with label smoothing and
product-aware soft targets: every item of the same product is a positive,
targets = (1 - eps) * pos / pos.sum(row) + eps / N (LAVIS `sim_targets`). Under DDP the local
rows are scored against the columns gathered from every process (with gradient), as LAVIS does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.losses import distributed


@dataclass
class ItcResult:
    """Everything the ITC step computes; ITM reuses the similarities to mine hard negatives.

    losses: {"itc": scalar loss}.
    sim_i2t: (B, W*B) local images vs all gathered texts, divided by the temperature.
    sim_t2i: (B, W*B) local texts vs all gathered images, divided by the temperature.
    product_ids: (B,) local product ids, or None (then positives are the diagonal).
    product_ids_all: (W*B,) product ids gathered over processes, or None.
    targets: (B, W*B) soft targets (before label smoothing), rows sum to 1.
    """

    losses: dict[str, torch.Tensor]
    sim_i2t: torch.Tensor
    sim_t2i: torch.Tensor
    product_ids: torch.Tensor | None
    product_ids_all: torch.Tensor | None
    targets: torch.Tensor


def positive_mask(
    product_ids: torch.Tensor | None, product_ids_all: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """Boolean (B, W*B) mask of positives: same product, or the local diagonal without ids.

    Args:
        product_ids: (B,) local product ids or None.
        product_ids_all: (W*B,) gathered product ids (None iff `product_ids` is None).
        batch: local batch size B.
        device: device of the result.
    """
    if product_ids is None:
        world = distributed.world_size()
        offset = distributed.rank() * batch
        mask = torch.zeros(batch, world * batch, dtype=torch.bool, device=device)
        idx = torch.arange(batch, device=device)
        mask[idx, offset + idx] = True
        return mask
    return product_ids.view(-1, 1) == product_ids_all.view(1, -1)  # (B, W*B)


class ItcLoss(nn.Module):
    """Image-text contrastive loss (eq. 3) with product-aware soft targets.

    Args:
        label_smoothing: eps of LAVIS's label smoothing (0.1 in BLIP-2).
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def compute(
        self,
        image_feats: torch.Tensor,
        text_feat: torch.Tensor,
        temperature: torch.Tensor | float,
        product_ids: torch.Tensor | None = None,
    ) -> ItcResult:
        """Compute the loss and the similarities.

        Args:
            image_feats: (B, Q, E) L2-normalised projected query outputs of the images.
            text_feat: (B, E) L2-normalised projected text [CLS] features.
            temperature: scalar tau (the encoder's learnable temperature).
            product_ids: (B,) long product ids; items sharing one are positives of each other.
                None: the pair (i, i) is the only positive.

        Returns:
            An `ItcResult` with the loss and the (B, W*B) similarity matrices.
        """
        if image_feats.dim() != 3 or text_feat.dim() != 2:
            raise ValueError(
                f"ItcLoss expects image_feats (B, Q, E) and text_feat (B, E), got "
                f"{tuple(image_feats.shape)} and {tuple(text_feat.shape)}"
            )
        if image_feats.shape[0] != text_feat.shape[0] or image_feats.shape[2] != text_feat.shape[1]:
            raise ValueError(
                f"ItcLoss: image_feats {tuple(image_feats.shape)} and text_feat {tuple(text_feat.shape)} "
                "disagree on batch size or embedding dim"
            )
        batch = image_feats.shape[0]
        if product_ids is not None and product_ids.shape != (batch,):
            raise ValueError(
                f"ItcLoss: product_ids must have shape ({batch},), got {tuple(product_ids.shape)}"
            )

        image_feats_all = distributed.gather_features(image_feats, with_grad=True)  # (W*B, Q, E)
        text_feat_all = distributed.gather_features(text_feat, with_grad=True)  # (W*B, E)
        product_ids_all = distributed.gather_ids(product_ids) if product_ids is not None else None

        # eq. 3: similarity = max over the query outputs, divided by the temperature
        sim_q2t = torch.einsum("bqe,ne->bnq", image_feats, text_feat_all)  # (B, W*B, Q)
        sim_i2t = sim_q2t.max(dim=-1).values / temperature  # (B, W*B)
        sim_t2q = torch.einsum("be,nqe->bnq", text_feat, image_feats_all)  # (B, W*B, Q)
        sim_t2i = sim_t2q.max(dim=-1).values / temperature  # (B, W*B)

        pos = positive_mask(product_ids, product_ids_all, batch, image_feats.device).float()  # (B, W*B)
        targets = pos / pos.sum(dim=1, keepdim=True)  # (B, W*B), LAVIS sim_targets
        smoothed = (1.0 - self.label_smoothing) * targets + self.label_smoothing / targets.shape[1]
        loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * smoothed).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * smoothed).sum(dim=1).mean()
        loss = (loss_i2t + loss_t2i) / 2
        return ItcResult(
            losses={"itc": loss},
            sim_i2t=sim_i2t,
            sim_t2i=sim_t2i,
            product_ids=product_ids,
            product_ids_all=product_ids_all,
            targets=targets,
        )

    def forward(
        self,
        image_feats: torch.Tensor,
        text_feat: torch.Tensor,
        temperature: torch.Tensor | float,
        product_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return {"itc": loss}; see `compute` for the arguments and for the similarities."""
        return self.compute(image_feats, text_feat, temperature, product_ids).losses
