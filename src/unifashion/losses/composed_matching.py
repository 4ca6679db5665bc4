"""Composed matching loss of phase 2: ITM(t, Z_T), the third term of UniFashion eq. 10.

The modifying text t and a target image go through the Q-Former's bi-directional mode (queries
and text attend to each other, queries cross-attend the target image) and the ITM head (averaged
over the query positions, eq. 4) decides whether the target image shows what the text asks for.
The matching batch has phase 1's shape (losses/matching.py): [t with its target, t with a negative
image, a negative text with the target], labels [1, 0, 0]; targets with the same id are never
negatives. Where the negatives come from (`negatives`):

- "hard": both drawn from the composed ITC similarities (e_cls vs Z_T) of the batch, as phase 1 and
  LAVIS do. For a text alone this is ill-posed: the target nearest the composed query usually also
  satisfies the text ("is red" is true of every red target), so the hard negatives are mostly false
  negatives and the loss stays at its prior (measured, bench/RESULTS.md).
- "random": both uniform over the batch's other targets and texts.
- "reference": the negative image of t is its own reference image, which by construction does not
  show what the text asks for (the text states how the target differs from it), and the negative
  text is uniform over the batch's other texts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from unifashion.losses import distributed
from unifashion.losses.composed_contrastive import ComposedItcResult
from unifashion.losses.contrastive import positive_mask
from unifashion.losses.matching import HasItmLogits, ItmLoss, sample_hard_negatives

ComposedNegatives = Literal["hard", "random", "reference"]
"""Where the composed ITM's negatives come from (module docstring)."""


class ComposedItmLoss(ItmLoss):
    """ITM(t, Z_T) (eq. 10) on [pos, neg-image, neg-text] triples, labels [1, 0, 0].

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
        negatives: ComposedNegatives = "hard",
        reference_vision_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """{"cir_itm": loss}.

        Args:
            matcher: the encoder (its `itm_logits`).
            target_vision_embeds: (B, P, Hv) vision outputs of the target images.
            input_ids, attention_mask: (B, L) the modifying texts.
            itc: the ITC(e_cls, Z_T) result of the same batch (its similarities pick the "hard" negatives).
            target_ids: (B,) long target ids.
            generator: optional generator of the negative draws.
            pad_token_id: pad id for gathered token sequences.
            negatives: "hard", "random" or "reference" (module docstring).
            reference_vision_embeds: (B, P, Hv) vision outputs of the reference images ("reference" only).

        Raises:
            ValueError: an unknown `negatives`, or "reference" without `reference_vision_embeds` of the
                targets' shape.
        """
        if negatives not in ("hard", "random", "reference"):
            raise ValueError(f"composed ITM negatives must be 'hard', 'random' or 'reference', got {negatives!r}")
        if negatives != "reference":
            sim_g2q, sim_q2g = itc.sim_g2q.detach(), itc.sim_q2g.detach()  # (B, W*B)
            if negatives == "random":
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
        if reference_vision_embeds is None or reference_vision_embeds.shape != target_vision_embeds.shape:
            got = None if reference_vision_embeds is None else tuple(reference_vision_embeds.shape)
            raise ValueError(f"composed ITM with reference negatives needs reference_vision_embeds of shape "
                             f"{tuple(target_vision_embeds.shape)}, got {got}")
        batch = input_ids.shape[0]
        ids_all = distributed.gather_ids(input_ids, pad_value=pad_token_id)  # (W*B, L')
        mask_all = distributed.gather_ids(attention_mask, pad_value=0)  # (W*B, L')
        ids_of_all = distributed.gather_ids(target_ids) if target_ids is not None else None
        positives = positive_mask(target_ids, ids_of_all, batch, input_ids.device)  # (B, W*B)
        uniform = torch.zeros(positives.shape, device=input_ids.device)  # (B, W*B): every other text alike
        neg_text = sample_hard_negatives(uniform, positives, generator)  # (B,) one text per target
        length = ids_all.shape[1]
        ids = F.pad(input_ids, (0, length - input_ids.shape[1]), value=pad_token_id)  # (B, L')
        mask = F.pad(attention_mask, (0, length - attention_mask.shape[1]), value=0)  # (B, L')
        loss = self.triples(matcher.itm_logits if hasattr(matcher, "itm_logits") else matcher,
                            target_vision_embeds, reference_vision_embeds, ids, mask,
                            ids_all[neg_text], mask_all[neg_text])
        return {"cir_itm": loss}
