"""Composed matching loss of phase 2: the third term of UniFashion eq. 10, ITM(t, Z_T).

An ITM pass (the Q-Former's bi-directional mode: queries and text attend to each other, queries
cross-attend a candidate target image; the ITM head averaged over the query positions, eq. 4)
decides whether the target image is what the query asks for. What the query is (`queries`):

- "text" (eq. 10 literally): the modifying text t alone, beside the learnable query tokens. Ill-posed
  for the relative texts of composed retrieval ("is longer", "shorter sleeves", "is darker"): whether
  a target satisfies them depends on the reference image, which this pass never sees, so the head
  cannot do better than its prior (0.636, `matching.ITM_PRIOR_LOSS`), where the demo's loss stays.
- "composed": the composed query itself. Its query embeddings are Z_R (the fused query outputs of
  reference image + t, `MultimodalEncoder.fuse`, eq. 9) instead of the learnable tokens, with t beside
  them; Z_R cross-attends the candidate target. Reference and text are both in the pass, so "is this
  the reference changed as t says?" is decidable; the gradient flows through Z_R into the fusion.

The matching batch has phase 1's shape (losses/matching.py), labels [1, 0, 0]: [the query with its
target, the query with a negative image, a negative query with the target]. A negative query is
another text ("text") or another whole composed query, its Z_R and its text together ("composed").
Targets with the same id are never negatives. Where the negatives come from (`negatives`):

- "hard": both drawn from the composed ITC similarities (e_cls vs Z_T) of the batch, as phase 1 and
  LAVIS do. For a text alone this is ill-posed: the target nearest the composed query usually also
  satisfies the text ("is red" is true of every red target), so the hard negatives are mostly false
  negatives and the loss stays at its prior (measured, bench/RESULTS.md).
- "random": both uniform over the batch's other targets and queries.
- "reference": the negative image of a query is its own reference image, which by construction does
  not show what the text asks for (the text states how the target differs from it), and the negative
  query is uniform over the batch's other queries.

Under DDP the negative images (and the texts of "text") are drawn from the batch gathered from every
process. The negative composed queries of "composed" are drawn from the local batch only: the Z_R of
other processes would have to be gathered with gradient (and all of their fusion graphs kept), so
that mode draws from this process's B queries, and needs two target ids among them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from unifashion.losses import distributed
from unifashion.losses.composed_contrastive import ComposedItcResult
from unifashion.losses.contrastive import positive_mask
from unifashion.losses.matching import HasItmLogits, ItmLoss, sample_hard_negatives

ComposedNegatives = Literal["hard", "random", "reference"]
"""Where the composed ITM's negatives come from (module docstring)."""

ComposedQueries = Literal["text", "composed"]
"""What the composed ITM matches against the target: the text alone, or Z_R with the text (module docstring)."""


class ComposedItmLoss(ItmLoss):
    """ITM(t, Z_T) (eq. 10) on [pos, neg-image, neg-query] triples, labels [1, 0, 0].

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
        queries: ComposedQueries = "text",
        composed_queries: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """{"cir_itm": loss}.

        Args:
            matcher: the encoder (its `itm_logits`), or that callable; "composed" passes it
                `query_embeds=`.
            target_vision_embeds: (B, P, Hv) vision outputs of the target images.
            input_ids, attention_mask: (B, L) the modifying texts.
            itc: the ITC(e_cls, Z_T) result of the same batch (its similarities pick the "hard" negatives).
            target_ids: (B,) long target ids.
            generator: optional generator of the negative draws.
            pad_token_id: pad id for gathered token sequences.
            negatives: "hard", "random" or "reference" (module docstring).
            reference_vision_embeds: (B, P, Hv) vision outputs of the reference images ("reference" only).
            queries: "text" (t alone, eq. 10 literally) or "composed" (Z_R with t; module docstring).
            composed_queries: (B, Q, H) Z_R, the fused query outputs of `MultimodalEncoder.fuse`, with
                gradient ("composed" only).

        Raises:
            ValueError: an unknown `negatives` or `queries`, "reference" without `reference_vision_embeds`
                of the targets' shape, or "composed" without `composed_queries` of B rows.
        """
        if negatives not in ("hard", "random", "reference"):
            raise ValueError(f"composed ITM negatives must be 'hard', 'random' or 'reference', got {negatives!r}")
        if queries not in ("text", "composed"):
            raise ValueError(f"composed ITM queries must be 'text' or 'composed', got {queries!r}")
        if queries == "composed":
            loss = self._with_composed_queries(
                matcher, target_vision_embeds, input_ids, attention_mask, composed_queries, itc, target_ids,
                generator, negatives, reference_vision_embeds,
            )
            return {"cir_itm": loss}
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
        _check_reference(reference_vision_embeds, target_vision_embeds)
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

    def _with_composed_queries(
        self,
        matcher: HasItmLogits | Callable[..., torch.Tensor],
        target_vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        composed_queries: torch.Tensor | None,
        itc: ComposedItcResult,
        target_ids: torch.Tensor | None,
        generator: torch.Generator | None,
        negatives: ComposedNegatives,
        reference_vision_embeds: torch.Tensor | None,
    ) -> torch.Tensor:
        """The "composed" loss: draw one negative image and one local negative composed query per item
        (`composed` for the arguments), then `composed_triples`."""
        batch = input_ids.shape[0]
        if composed_queries is None or composed_queries.dim() != 3 or composed_queries.shape[0] != batch:
            got = None if composed_queries is None else tuple(composed_queries.shape)
            raise ValueError(f"composed ITM with queries='composed' needs composed_queries (Z_R) of shape "
                             f"({batch}, Q, H), got {got}")
        offset = distributed.rank() * batch  # this process's columns of the gathered batch
        ids_of_all = distributed.gather_ids(target_ids) if target_ids is not None else None
        positives = positive_mask(target_ids, ids_of_all, batch, input_ids.device)  # (B, W*B)
        local_positives = positives[:, offset : offset + batch]  # (B, B) local queries of the same target
        if negatives == "reference":
            _check_reference(reference_vision_embeds, target_vision_embeds)
            vision_neg = reference_vision_embeds  # (B, P, Hv) each query's own reference image
            uniform = torch.zeros(local_positives.shape, device=input_ids.device)  # (B, B)
            neg_query = sample_hard_negatives(uniform, local_positives, generator)  # (B,) local query per target
        else:
            sim_g2q, sim_q2g = itc.sim_g2q.detach(), itc.sim_q2g.detach()  # (B, W*B)
            if negatives == "random":
                sim_g2q, sim_q2g = torch.zeros_like(sim_g2q), torch.zeros_like(sim_q2g)
            vision_all = distributed.gather_features(
                target_vision_embeds, with_grad=target_vision_embeds.requires_grad
            )  # (W*B, P, Hv)
            if sim_q2g.shape != positives.shape or sim_g2q.shape != positives.shape:
                raise ValueError(f"composed ITM: similarities must be {tuple(positives.shape)}, got "
                                 f"{tuple(sim_q2g.shape)} and {tuple(sim_g2q.shape)}")
            neg_target = sample_hard_negatives(sim_q2g, positives, generator)  # (B,) one target per query
            vision_neg = vision_all[neg_target]  # (B, P, Hv)
            local_sim = sim_g2q[:, offset : offset + batch]  # (B, B) local targets vs local queries
            neg_query = sample_hard_negatives(local_sim, local_positives, generator)  # (B,) local query per target
        itm_logits = matcher.itm_logits if hasattr(matcher, "itm_logits") else matcher
        return self.composed_triples(itm_logits, target_vision_embeds, vision_neg, composed_queries, input_ids,
                                     attention_mask, neg_query)

    def composed_triples(
        self,
        itm_logits: Callable[..., torch.Tensor],
        vision: torch.Tensor,
        vision_neg: torch.Tensor,
        queries: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        neg_query: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy of eq. 4 on [((Z_R, t), target), ((Z_R, t), negative image), ((Z_R', t'), target)],
        labels [1, 0, 0]; the first `max_pairs` triples only, when set.

        Args:
            itm_logits: (vision_embeds, input_ids, attention_mask, query_embeds=) -> (N, 2) logits.
            vision, vision_neg: (B, P, Hv) the targets and the negative images.
            queries: (B, Q, H) the composed queries Z_R; ids, mask: (B, L) their texts.
            neg_query: (B,) long, row of each target's negative composed query in `queries` / `ids`.
        """
        n = vision.shape[0] if self.max_pairs is None else min(self.max_pairs, vision.shape[0])
        neg = neg_query[:n]  # (n,) may point past n: every local query can be a negative
        query_batch = torch.cat([queries[:n], queries[:n], queries[neg]], dim=0)  # (3n, Q, H)
        vision_batch = torch.cat([vision[:n], vision_neg[:n], vision[:n]], dim=0)  # (3n, P, Hv)
        ids_batch = torch.cat([ids[:n], ids[:n], ids[neg]], dim=0)  # (3n, L)
        mask_batch = torch.cat([mask[:n], mask[:n], mask[neg]], dim=0)  # (3n, L)
        logits = itm_logits(vision_batch, ids_batch, mask_batch, query_embeds=query_batch)  # (3n, 2)
        labels = torch.cat(
            [torch.ones(n, dtype=torch.long), torch.zeros(2 * n, dtype=torch.long)]
        ).to(logits.device)  # (3n,)
        return F.cross_entropy(logits, labels)


def _check_reference(reference_vision_embeds: torch.Tensor | None, target_vision_embeds: torch.Tensor) -> None:
    """Clear error for "reference" negatives without reference vision outputs of the targets' shape."""
    if reference_vision_embeds is None or reference_vision_embeds.shape != target_vision_embeds.shape:
        got = None if reference_vision_embeds is None else tuple(reference_vision_embeds.shape)
        raise ValueError(f"composed ITM with reference negatives needs reference_vision_embeds of shape "
                         f"{tuple(target_vision_embeds.shape)}, got {got}")
