"""Image-text matching loss (ITM, eq. 4) with hard negatives mined from the ITC similarities.

As LAVIS trains BLIP-2: for every local image one negative text, and for every local text one
negative image, are drawn with `torch.multinomial` from the softmax of the ITC similarities over
the (gathered) batch, with every item of the same product excluded. The matching batch is
[positive pairs, (negative image, text), (image, negative text)] with labels [1, 0, 0], and the loss
is the cross-entropy of the encoder's ITM logits (the ITM head averaged over query positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.losses import distributed
from unifashion.losses.contrastive import positive_mask

ITM_PRIOR_LOSS = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)
"""Cross-entropy (0.6365) of a matcher that ignores its inputs on the [1, 0, 0] label mix: the loss an
ITM head starts from and stays at while it learns nothing."""

ItmLogitsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(vision_embeds (N, P, Hv), input_ids (N, L), attention_mask (N, L)) -> logits (N, 2)."""


class HasItmLogits(Protocol):
    """Anything with an `itm_logits` method (the `MultimodalEncoder`); `query_embeds` (B, Q, H) replaces its
    learnable queries (the composed ITM of phase 2, losses/composed_matching.py)."""

    def itm_logits(
        self,
        vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def sample_hard_negatives(
    sim: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one negative column per row, with probability softmax(sim) over the non-positive columns.

    Args:
        sim: (B, N) similarities (already divided by the temperature).
        positives: (B, N) bool mask of the columns that must never be drawn (same product).
        generator: optional torch.Generator for reproducible draws (a CPU generator works for CUDA inputs).

    Returns:
        (B,) long column indices, never a positive.
    """
    no_negative = positives.all(dim=1)
    if bool(no_negative.any()):
        rows = no_negative.nonzero().flatten().tolist()
        raise ValueError(
            f"ITM hard negatives: rows {rows} have no item of another product in the (gathered) batch; "
            "a batch needs at least two products"
        )
    with torch.no_grad():
        logits = sim.detach().float().masked_fill(positives, float("-inf"))  # (B, N)
        weights = F.softmax(logits, dim=1)  # (B, N), exactly 0 on positives
        # guard against rows whose finite weights underflow to all zeros
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, (~positives).float())
        if generator is not None and generator.device != weights.device:
            weights = weights.to(generator.device)  # draw where the generator lives (e.g. a CPU generator)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1).to(sim.device)  # (B,)


class ItmLoss(nn.Module):
    """Image-text matching loss (eq. 4) on [pos, neg-image, neg-text] triples with labels [1, 0, 0].

    Args:
        max_pairs: score only the first `max_pairs` local pairs (and their two negatives) with the
            ITM head; hard negatives are still mined from the whole gathered batch. None (LAVIS):
            every pair. A cost knob for small machines: the ITM forward is 3x the batch.
    """

    def __init__(self, max_pairs: int | None = None) -> None:
        super().__init__()
        if max_pairs is not None and max_pairs < 1:
            raise ValueError(f"ItmLoss.max_pairs must be >= 1 or None, got {max_pairs}")
        self.max_pairs = max_pairs

    def forward(
        self,
        matcher: ItmLogitsFn | HasItmLogits,
        vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sim_i2t: torch.Tensor,
        sim_t2i: torch.Tensor,
        product_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        pad_token_id: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Compute the ITM loss of a batch of matching image-text pairs.

        Args:
            matcher: the encoder (anything with `itm_logits`) or its `itm_logits` callable.
            vision_embeds: (B, P, Hv) vision encoder outputs of the local images.
            input_ids: (B, L) token ids of the local texts.
            attention_mask: (B, L) their attention mask.
            sim_i2t: (B, W*B) ITC similarities local images vs all texts (`ItcResult.sim_i2t`).
            sim_t2i: (B, W*B) ITC similarities local texts vs all images (`ItcResult.sim_t2i`).
            product_ids: (B,) product ids (same product is never a negative); None: only the pair itself.
            generator: optional torch.Generator for the multinomial draws.
            pad_token_id: pad id used when token sequences of different lengths are gathered.

        Returns:
            {"itm": loss}.
        """
        itm_logits = matcher.itm_logits if hasattr(matcher, "itm_logits") else matcher
        batch = vision_embeds.shape[0]
        if input_ids.shape[0] != batch or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"ItmLoss: vision_embeds {tuple(vision_embeds.shape)}, input_ids {tuple(input_ids.shape)} and "
                f"attention_mask {tuple(attention_mask.shape)} disagree"
            )
        vision_all = distributed.gather_features(vision_embeds, with_grad=vision_embeds.requires_grad)
        ids_all = distributed.gather_ids(input_ids, pad_value=pad_token_id)  # (W*B, L')
        mask_all = distributed.gather_ids(attention_mask, pad_value=0)  # (W*B, L')
        if sim_i2t.shape != (batch, vision_all.shape[0]) or sim_t2i.shape != sim_i2t.shape:
            raise ValueError(
                f"ItmLoss: similarities must be ({batch}, {vision_all.shape[0]}), got "
                f"{tuple(sim_i2t.shape)} and {tuple(sim_t2i.shape)}"
            )
        product_ids_all = distributed.gather_ids(product_ids) if product_ids is not None else None
        positives = positive_mask(product_ids, product_ids_all, batch, vision_embeds.device)  # (B, W*B)

        neg_image_idx = sample_hard_negatives(sim_t2i, positives, generator)  # (B,) one image per text
        neg_text_idx = sample_hard_negatives(sim_i2t, positives, generator)  # (B,) one text per image
        vision_neg = vision_all[neg_image_idx]  # (B, P, Hv)
        ids_neg, mask_neg = ids_all[neg_text_idx], mask_all[neg_text_idx]  # (B, L')

        length = ids_all.shape[1]
        ids_local = F.pad(input_ids, (0, length - input_ids.shape[1]), value=pad_token_id)  # (B, L')
        mask_local = F.pad(attention_mask, (0, length - attention_mask.shape[1]), value=0)  # (B, L')

        return {"itm": self.triples(itm_logits, vision_embeds, vision_neg, ids_local, mask_local, ids_neg, mask_neg)}

    def triples(
        self,
        itm_logits: ItmLogitsFn,
        vision: torch.Tensor,
        vision_neg: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        ids_neg: torch.Tensor,
        mask_neg: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy of eq. 4 on [(image, text), (negative image, text), (image, negative text)], labels
        [1, 0, 0]; the first `max_pairs` triples only, when set.

        Args:
            itm_logits: (vision_embeds, input_ids, attention_mask) -> (N, 2) logits.
            vision, vision_neg: (B, P, Hv) the images and their negative images.
            ids, mask: (B, L) the texts; ids_neg, mask_neg: (B, L) their negative texts (same length L).
        """
        batch = vision.shape[0]
        if self.max_pairs is not None and self.max_pairs < batch:
            n = self.max_pairs
            vision, vision_neg = vision[:n], vision_neg[:n]  # (n, P, Hv)
            ids, mask, ids_neg, mask_neg = ids[:n], mask[:n], ids_neg[:n], mask_neg[:n]
            batch = n
        # eq. 4: [pos, pos, neg-text] texts x [img, neg-img, img] images, labels [1, 0, 0]
        vision_batch = torch.cat([vision, vision_neg, vision], dim=0)  # (3B, P, Hv)
        ids_batch = torch.cat([ids, ids, ids_neg], dim=0)  # (3B, L)
        mask_batch = torch.cat([mask, mask, mask_neg], dim=0)  # (3B, L)
        logits = itm_logits(vision_batch, ids_batch, mask_batch)  # (3B, 2)
        labels = torch.cat(
            [torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)]
        ).to(logits.device)  # (3B,)
        return F.cross_entropy(logits, labels)
