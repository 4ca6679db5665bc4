"""Composed matching loss of phase 2: ITM(t, Z_T), the third term of UniFashion eq. 10.

The modifying text t and a target image go through the Q-Former's bi-directional mode (queries
and text attend to each other, queries cross-attend the target image) and the ITM head (averaged
over the query positions, eq. 4) decides whether the target image shows what the text asks for.
The matching batch is the one of phase 1 (losses/matching.py): [t with its target, t with a hard
negative target, a hard negative text with the target], labels [1, 0, 0]; the hard negatives are
drawn from the composed ITC similarities (e_cls vs Z_T) of the batch, targets with the same id never
being negatives.
"""

from __future__ import annotations

import torch

from unifashion.losses.composed_contrastive import ComposedItcResult
from unifashion.losses.matching import HasItmLogits, ItmLoss


class ComposedItmLoss(ItmLoss):
    """ITM(t, Z_T) (eq. 10) on [pos, neg-target, neg-text] triples, labels [1, 0, 0].

    Args:
        max_pairs: as `ItmLoss` (score only this many local pairs; None: all).
    """

    def composed(
        self,
        matcher: HasItmLogits,
        target_vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        itc: ComposedItcResult,
        target_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        pad_token_id: int = 0,
        hard_negatives: bool = True,
    ) -> dict[str, torch.Tensor]:
        """{"cir_itm": loss}.

        Args:
            matcher: the encoder (its `itm_logits`).
            target_vision_embeds: (B, P, Hv) vision outputs of the target images.
            input_ids, attention_mask: (B, L) the modifying texts.
            itc: the ITC(e_cls, Z_T) result of the same batch (its similarities pick the negatives).
            target_ids: (B,) long target ids.
            generator: optional generator of the negative draws.
            pad_token_id: pad id for gathered token sequences.
            hard_negatives: draw the negatives from the composed ITC similarities (False: uniformly
                among the batch's other targets, all similarities taken as equal).
        """
        sim_g2q, sim_q2g = itc.sim_g2q.detach(), itc.sim_q2g.detach()  # (B, W*B)
        if not hard_negatives:
            sim_g2q, sim_q2g = torch.zeros_like(sim_g2q), torch.zeros_like(sim_q2g)
        loss = self(
            matcher,
            target_vision_embeds,
            input_ids,
            attention_mask,
            sim_i2t=sim_g2q,  # (B, W*B) local targets vs all texts
            sim_t2i=sim_q2g,  # (B, W*B) local texts vs all targets
            product_ids=target_ids,
            generator=generator,
            pad_token_id=pad_token_id,
        )["itm"]
        return {"cir_itm": loss}
