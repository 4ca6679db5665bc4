"""Cross-modal retrieval (CMR) evaluation on precomputed features (DATASETS.md 6.1).

Everything here works on features the model has already produced:

- ``image_feats`` float (N, Q, E): the Q learnable-query embeddings of each image, L2-normalised
  (a plain (N, E) tensor is taken as Q = 1);
- ``text_feats`` float (M, E): one embedding per text, L2-normalised.

The similarity is the ITC score of the paper (eq. 3): s(i, j) = max_q image_feats[i, q] . text_feats[j].
:func:`score_matrix` computes all of it in image chunks (one matrix product per chunk), and the
protocols take the resulting (N_img, M_txt) score matrix:

- :func:`full_protocol` (FashionViL ``r@k_general``): every image against one text per product.
- :func:`sample100_protocol` (FashionViL ``r@k_kaleido``): 1,000 sampled queries, each ranked inside
  a 101-item gallery (1 positive + 100 same-sub-category negatives), 5 seeded repeats.
- :func:`block100_protocol` (UniFashion's own "C" mode): consecutive blocks of 100 pairs.
- :func:`itm_rerank`: re-ranking of the ITC top-k by ITM and ITC together: by default ITM log-odds +
  ITC logit (similarity / temperature), or LAVIS's ITM "match" logit + ITC similarity.

Ties: a gallery item of another product whose score equals the best positive's score is counted
as ranked *before* it (pessimistic), so a constant-score model gets no free hits.

Recalls are in percent (0-100). Protocols return short keys (``"i2t/R@1"``, ``"mean/R"``);
:func:`prefix_metrics` and :func:`retrieval_metrics` turn them into the project's flat keys
``task/dataset/protocol/direction/metric`` (e.g. ``cmr/fashiongen/sample100/i2t/R@1``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from unifashion.scoring import TopKScores, score_matrix  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

DIRECTIONS = ("i2t", "t2i")
DEFAULT_KS = (1, 5, 10)
Subcats = Sequence[str] | Tensor


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _as_ids(ids: Tensor | Sequence[int], name: str, length: int) -> Tensor:
    ids = torch.as_tensor(ids).reshape(-1).cpu()
    if ids.numel() != length:
        raise ValueError(f"{name} has {ids.numel()} entries, expected {length} (score matrix side)")
    return ids.long()


def _encode_subcats(image_subcats: Subcats, text_subcats: Subcats, n: int, m: int) -> tuple[Tensor, Tensor]:
    """Sub-category labels (names or ints) -> long codes over one shared vocabulary."""
    if isinstance(image_subcats, Tensor) and isinstance(text_subcats, Tensor):
        return _as_ids(image_subcats, "image_subcats", n), _as_ids(text_subcats, "text_subcats", m)
    image_list = image_subcats.tolist() if isinstance(image_subcats, Tensor) else list(image_subcats)
    text_list = text_subcats.tolist() if isinstance(text_subcats, Tensor) else list(text_subcats)
    vocab = {name: code for code, name in enumerate(sorted(set(image_list) | set(text_list), key=str))}
    image_codes = torch.tensor([vocab[s] for s in image_list], dtype=torch.long)
    text_codes = torch.tensor([vocab[s] for s in text_list], dtype=torch.long)
    return _as_ids(image_codes, "image_subcats", n), _as_ids(text_codes, "text_subcats", m)


def _recalls(ranks: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """ranks long (B,): items of other products ranked before the best positive -> R@k in percent."""
    return {f"R@{k}": (ranks < k).double().mean().item() * 100.0 for k in ks}


def _with_mean(per_direction: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"i2t": {"R@1": ..}, "t2i": {..}} -> flat {"i2t/R@1": .., "mean/R": mean of all recalls}."""
    out = {f"{d}/{name}": value for d, metrics in per_direction.items() for name, value in metrics.items()}
    recalls = [v for d in per_direction.values() for name, v in d.items() if name.startswith("R@")]
    out["mean/R"] = sum(recalls) / len(recalls)
    return out


def _check_scores(scores: Tensor) -> Tensor:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N_img, M_txt), got shape {tuple(scores.shape)}")
    return scores


# ----------------------------------------------------------------------------------------------
# A. Full set (FashionViL r@k_general)
# ----------------------------------------------------------------------------------------------


def _full_ranks_i2t(scores: Tensor, image_pid: Tensor, text_pid: Tensor, chunk_size: int) -> Tensor:
    """Per image: texts of other products scoring >= the best text of its own product."""
    text_pid = text_pid.to(scores.device)
    ranks = []
    for start in range(0, scores.shape[0], chunk_size):
        block = scores[start : start + chunk_size]  # (c, M)
        positive = (
            image_pid[start : start + chunk_size].to(scores.device)[:, None] == text_pid[None]
        )  # (c, M)
        if not positive.any(1).all():
            bad = start + int((~positive.any(1)).nonzero()[0])
            raise ValueError(f"image {bad} (product {int(image_pid[bad])}) has no text of its product")
        best = block.masked_fill(~positive, float("-inf")).amax(1, keepdim=True)  # (c, 1)
        ranks.append(((block >= best) & ~positive).sum(1).cpu())
    return torch.cat(ranks)


def full_protocol(
    scores: Tensor,
    image_product_ids: Tensor | Sequence[int],
    text_product_ids: Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    t2i_scores: Tensor | None = None,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Full-set protocol (DATASETS.md 6.1 A, FashionViL ``r@k_general``).

    Every validation image is a query against all texts (one per product): a hit at k if a text of
    the image's product is in the top k. Every text is a query against all images: a hit at k if ANY
    image of its product is in the top k.

    Args:
        scores: float (N_img, M_txt) similarities (see :func:`score_matrix`).
        image_product_ids: (N,) product of each image.
        text_product_ids: (M,) product of each text.
        ks: cut-offs.
        t2i_scores: optional different (N_img, M_txt) matrix for the text->image direction (e.g. the
            ``t2i`` matrix of :func:`itm_rerank`); default ``scores``.
        chunk_size: rows (images) processed at once; bounds the extra memory to chunk_size x M.

    Returns:
        ``{"i2t/R@k": .., "t2i/R@k": .., "mean/R": mean of the 2 * len(ks) recalls}``, percent.
    """
    ks = _check_ks(ks)
    scores = _check_scores(scores)
    t2i_scores = scores if t2i_scores is None else _check_scores(t2i_scores)
    if t2i_scores.shape != scores.shape:
        raise ValueError(f"t2i_scores shape {tuple(t2i_scores.shape)} != scores shape {tuple(scores.shape)}")
    n, m = scores.shape
    image_pid = _as_ids(image_product_ids, "image_product_ids", n)
    text_pid = _as_ids(text_product_ids, "text_product_ids", m)
    i2t = _full_ranks_i2t(scores, image_pid, text_pid, chunk_size)  # (N,)
    t2i = _full_ranks_i2t(t2i_scores.t(), text_pid, image_pid, chunk_size)  # (M,)
    return _with_mean({"i2t": _recalls(i2t, ks), "t2i": _recalls(t2i, ks)})


# ----------------------------------------------------------------------------------------------
# B. Sample-100 (FashionViL r@k_kaleido)
# ----------------------------------------------------------------------------------------------


@dataclass
class Sample100Galleries:
    """The galleries drawn for one direction of one repeat (indices into the score matrix)."""

    queries: Tensor
    """long (B,): the sampled query indices (rows of the query side)."""
    positives: Tensor
    """long (B,): the positive gallery item of each query (same product id)."""
    negatives: Tensor
    """long (B, num_negatives): distinct gallery items of other products."""
    fallback: Tensor
    """bool (B,): the query's sub-category had fewer than num_negatives other-product items, so the
    negatives were topped up with random items of other sub-categories."""


def sample100_galleries(
    query_pid: Tensor,
    gallery_pid: Tensor,
    query_subcat: Tensor,
    gallery_subcat: Tensor,
    num_queries: int,
    num_negatives: int,
    generator: torch.Generator,
    chunk_size: int = 256,
) -> Sample100Galleries:
    """Draw the sample-100 galleries of one direction (vectorised over queries).

    Queries: ``num_queries`` drawn uniformly without replacement (``torch.randperm``; all queries if
    there are fewer). Positive: a uniformly random gallery item of the query's product. Negatives:
    ``num_negatives`` distinct, uniformly random gallery items of the query's sub-category with a
    different product id. Fallback (documented, counted): if the sub-category has fewer such items,
    all of them are taken and the rest are drawn uniformly from other-product items of other
    sub-categories.

    Args:
        query_pid: long (Nq,) product ids of the query side.
        gallery_pid: long (G,) product ids of the gallery side.
        query_subcat: long (Nq,) sub-category codes of the query side.
        gallery_subcat: long (G,) sub-category codes of the gallery side.
        num_queries: queries to sample.
        num_negatives: negatives per gallery (100).
        generator: seeded CPU generator (all draws come from it).
        chunk_size: queries processed at once (bounds memory to chunk_size x G).

    Returns:
        The drawn :class:`Sample100Galleries`.
    """
    num_gallery = gallery_pid.numel()
    if num_gallery <= num_negatives:
        raise ValueError(
            f"the gallery has {num_gallery} items: num_negatives={num_negatives} negatives plus a positive "
            "cannot be drawn"
        )
    queries = torch.randperm(query_pid.numel(), generator=generator)[:num_queries]  # (B,)
    positives, negatives, fallback = [], [], []
    for start in range(0, queries.numel(), chunk_size):
        q = queries[start : start + chunk_size]  # (c,)
        c = q.numel()
        same_product = query_pid[q][:, None] == gallery_pid[None]  # (c, G)
        same_subcat = query_subcat[q][:, None] == gallery_subcat[None]  # (c, G)
        # Positive: argmax of uniform keys in [0, 1) over the same-product items (others -1).
        best, positive = (
            torch.rand(c, num_gallery, generator=generator).masked_fill(~same_product, -1.0).max(1)
        )
        if (best < 0).any():
            bad = int(q[best < 0][0])
            raise ValueError(
                f"query {bad} (product {int(query_pid[bad])}) has no gallery item of the same product"
            )
        # Negatives: keys in [2, 3) for the query's sub-category, [0, 1) for the others (fallback),
        # -inf for its own product; the top num_negatives keys are a uniform draw without replacement
        # from the sub-category, topped up uniformly from the other sub-categories if it is too small.
        keys = torch.rand(c, num_gallery, generator=generator) + 2.0 * same_subcat  # (c, G)
        values, negative = keys.masked_fill_(same_product, float("-inf")).topk(num_negatives, dim=1)
        if torch.isinf(values[:, -1]).any():
            bad = int(q[torch.isinf(values[:, -1])][0])
            raise ValueError(
                f"query {bad} has only {int((~same_product[q == bad]).sum())} gallery items of other products; "
                f"num_negatives={num_negatives} cannot be drawn"
            )
        positives.append(positive)  # (c,)
        negatives.append(negative)  # (c, num_negatives)
        fallback.append(values[:, -1] < 2.0)  # (c,) the last pick came from another sub-category
    if not positives:
        raise ValueError("no queries to sample (empty query side)")
    return Sample100Galleries(queries, torch.cat(positives), torch.cat(negatives), torch.cat(fallback))


def gallery_ranks(query_gallery_scores: Tensor, galleries: Sample100Galleries) -> Tensor:
    """long (B,): negatives of each gallery scoring >= its positive (0 = ranked first).

    Args:
        query_gallery_scores: float (Nq, G) scores of the direction (rows = queries).
        galleries: the drawn galleries.
    """
    rows = query_gallery_scores[galleries.queries.to(query_gallery_scores.device)].cpu()  # (B, G)
    positive = rows.gather(1, galleries.positives[:, None])  # (B, 1)
    negative = rows.gather(1, galleries.negatives)  # (B, num_negatives)
    return (negative >= positive).sum(1)


def sample100_protocol(
    scores: Tensor,
    image_product_ids: Tensor | Sequence[int],
    text_product_ids: Tensor | Sequence[int],
    image_subcats: Subcats,
    text_subcats: Subcats,
    num_queries: int = 1000,
    num_negatives: int = 100,
    repeats: int = 5,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Sample-100 protocol (DATASETS.md 6.1 B, FashionViL ``r@k_kaleido``).

    Per repeat and direction (i2t: image queries vs texts; t2i: text queries vs images), draw the
    galleries with :func:`sample100_galleries` and rank each query's positive among its
    1 + ``num_negatives`` items. Recalls are averaged over the ``repeats`` repeats. One
    ``torch.Generator`` seeded with ``seed`` drives every draw: same seed, same result.

    Args:
        scores: float (N_img, M_txt) similarities.
        image_product_ids: (N,) product of each image.
        text_product_ids: (M,) product of each text.
        image_subcats: N sub-category names (or int codes) of the images.
        text_subcats: M sub-category names (or int codes) of the texts.
        num_queries: queries sampled per direction and repeat (1000).
        num_negatives: negatives per gallery (100).
        repeats: independent repeats averaged (5).
        seed: seed of the sampling generator.
        ks: cut-offs.

    Returns:
        ``{"i2t/R@k", "t2i/R@k", "mean/R"}`` in percent, plus per direction ``num_queries`` (queries
        per repeat) and ``fallback_queries`` (queries, summed over repeats, whose negatives had to
        be topped up from other sub-categories).
    """
    ks = _check_ks(ks)
    scores = _check_scores(scores)
    if num_queries < 1 or num_negatives < 1 or repeats < 1:
        raise ValueError(
            f"num_queries, num_negatives and repeats must be >= 1, got {num_queries}, {num_negatives}, {repeats}"
        )
    if max(ks) > num_negatives + 1:
        log.warning("R@%d is always 100 with galleries of %d items", max(ks), num_negatives + 1)
    n, m = scores.shape
    image_pid = _as_ids(image_product_ids, "image_product_ids", n)
    text_pid = _as_ids(text_product_ids, "text_product_ids", m)
    image_sub, text_sub = _encode_subcats(image_subcats, text_subcats, n, m)
    sides = {
        "i2t": (scores, image_pid, text_pid, image_sub, text_sub),
        "t2i": (scores.t(), text_pid, image_pid, text_sub, image_sub),
    }
    generator = torch.Generator().manual_seed(seed)
    sums = {d: dict.fromkeys(ks, 0.0) for d in DIRECTIONS}
    fallback = dict.fromkeys(DIRECTIONS, 0)
    used = dict.fromkeys(DIRECTIONS, 0)
    for _ in range(repeats):
        for direction, (qg_scores, q_pid, g_pid, q_sub, g_sub) in sides.items():
            galleries = sample100_galleries(q_pid, g_pid, q_sub, g_sub, num_queries, num_negatives, generator)
            for k, value in zip(ks, _recalls(gallery_ranks(qg_scores, galleries), ks).values()):
                sums[direction][k] += value
            fallback[direction] += int(galleries.fallback.sum())
            used[direction] = galleries.queries.numel()
    out = _with_mean({d: {f"R@{k}": sums[d][k] / repeats for k in ks} for d in DIRECTIONS})
    for direction in DIRECTIONS:
        out[f"{direction}/num_queries"] = used[direction]
        out[f"{direction}/fallback_queries"] = fallback[direction]
        if fallback[direction]:
            log.warning(
                "sample100 %s: %d queries (over %d repeats) had fewer than %d same-sub-category negatives; "
                "topped up from other sub-categories",
                direction,
                fallback[direction],
                repeats,
                num_negatives,
            )
    return out


# ----------------------------------------------------------------------------------------------
# C. Block-100 (UniFashion's own evaluation)
# ----------------------------------------------------------------------------------------------


def block100_protocol(
    scores: Tensor,
    block_size: int = 100,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """UniFashion's "C" mode (DATASETS.md 6.1 C): consecutive blocks of ``block_size`` pairs.

    Row i and column i of ``scores`` are one image-text pair. Each block of ``block_size``
    consecutive pairs is ranked on its own (block_size x block_size similarities), positive = the
    diagonal. Like the reference loader (``drop_last=True``) a last incomplete block is dropped; the
    number of dropped pairs is returned as ``dropped_pairs``.

    Args:
        scores: float (P, P) similarities of P image-text pairs.
        block_size: pairs per block.
        ks: cut-offs.

    Returns:
        ``{"i2t/R@k", "t2i/R@k", "mean/R", "dropped_pairs"}`` (recalls in percent).
    """
    ks = _check_ks(ks)
    scores = _check_scores(scores)
    p = scores.shape[0]
    if scores.shape[1] != p:
        raise ValueError(f"block100 needs a square (pairs x pairs) score matrix, got {tuple(scores.shape)}")
    blocks = p // block_size
    if blocks == 0:
        raise ValueError(f"block100 needs at least block_size={block_size} pairs, got {p}")
    used = blocks * block_size
    tiles = scores[:used, :used].reshape(blocks, block_size, blocks, block_size)
    tiles = torch.diagonal(tiles, dim1=0, dim2=2).permute(2, 0, 1)  # (blocks, bs, bs)
    diag = torch.diagonal(tiles, dim1=1, dim2=2)  # (blocks, bs)
    i2t = (tiles >= diag[:, :, None]).sum(2) - 1  # (blocks, bs): texts scoring >= the positive
    t2i = (tiles >= diag[:, None, :]).sum(1) - 1  # (blocks, bs): images scoring >= the positive
    if p - used:
        log.warning("block100: dropped the last %d pairs (incomplete block)", p - used)
    out = _with_mean({"i2t": _recalls(i2t.reshape(-1), ks), "t2i": _recalls(t2i.reshape(-1), ks)})
    out["dropped_pairs"] = p - used
    return out


# ----------------------------------------------------------------------------------------------
# ITM re-ranking (LAVIS)
# ----------------------------------------------------------------------------------------------


class RerankedScores(NamedTuple):
    """Score matrices after ITM re-ranking, one per direction."""

    i2t: Tensor
    """float (N, M): each image's top-k texts re-scored (ITM + ITC); the rest keep ITC order below."""
    t2i: Tensor
    """float (N, M): each text's top-k images re-scored (ITM + ITC); the rest keep ITC order below."""


ItmFn = Callable[[Tensor, Tensor], Tensor]
RerankRule = Literal["log_odds", "lavis"]


def _itm_scores(itm_fn: ItmFn, image_idx: Tensor, text_idx: Tensor, batch_size: int, rule: RerankRule) -> Tensor:
    scores = []
    for start in range(0, image_idx.numel(), batch_size):
        i, t = image_idx[start : start + batch_size], text_idx[start : start + batch_size]
        out = torch.as_tensor(itm_fn(i, t)).detach().float().cpu()
        if out.dim() == 2 and out.shape[1] == 2:
            # (P, 2) [no-match, match] logits -> log-odds of "match", or (LAVIS) the match logit alone
            out = out[:, 1] - out[:, 0] if rule == "log_odds" else out[:, 1]
        if out.shape != (i.numel(),):
            raise ValueError(
                f"itm_fn must return (P,) or (P, 2) logits for P={i.numel()} pairs, got {tuple(out.shape)}"
            )
        scores.append(out)
    return torch.cat(scores)


def _rerank_rows(scores: Tensor, k: int, itm_of: Callable[[Tensor, Tensor], Tensor], itc_scale: float) -> Tensor:
    """Re-rank the top-k columns of each row by ITM + itc_scale x ITC; the others keep their order below."""
    values, cols = scores.topk(k, dim=1)  # (R, k)
    rows = torch.arange(scores.shape[0])[:, None].expand_as(cols)  # (R, k)
    new = itm_of(rows.reshape(-1), cols.reshape(-1)).view_as(values) + itc_scale * values  # (R, k)
    shift = scores.max() - new.min() + 1.0
    out = scores - shift  # every non-candidate below every candidate
    out.scatter_(1, cols, new)
    return out


def itm_rerank(
    scores: Tensor,
    itm_fn: ItmFn,
    k: int = 128,
    batch_size: int = 1024,
    *,
    rule: RerankRule = "log_odds",
    temperature: float | None = None,
) -> RerankedScores:
    """Re-ranking of the ITC top-k candidates by ITM and ITC together.

    For each image the ``k`` best texts by ITC (and for each text the ``k`` best images) get a new
    score; every other pair keeps its ITC order but is shifted below all candidates (LAVIS fills them
    with -100; keeping the ITC order makes R@k > k well defined). The new score:

    - ``rule="log_odds"`` (default): ``log p_itm(match) - log p_itm(no match) + s_ij / temperature``,
      the sum of the two heads' log-scores on the scale each was trained on: the ITM cross-entropy
      (eq. 4) trains the log-odds, the ITC softmax (eq. 3) the logits s / tau. With ``temperature``
      None the similarity is added unscaled.
    - ``rule="lavis"``: ``itm_match_logit + s_ij`` (LAVIS ``compute_sim_matrix``: the raw "match" logit
      plus the raw similarity). It presumes an ITM head whose logits dwarf the similarity gaps of the
      top-k; a weak ITM head then decides the order alone (measured on the demo, bench/RESULTS.md).

    Args:
        scores: float (N_img, M_txt) ITC similarities.
        itm_fn: ``itm_fn(image_indices long (P,), text_indices long (P,)) -> logits`` of shape (P, 2)
            ([no match, match]) or (P,) (then used as the ITM score as it is); called in batches of
            ``batch_size`` pairs. Indices refer to the rows/columns of ``scores``.
        k: candidates per query (clamped to the gallery size).
        batch_size: pairs per ``itm_fn`` call.
        rule: "log_odds" or "lavis" (above).
        temperature: the ITC temperature tau of ``log_odds`` (the encoder's learned ``temp``).

    Returns:
        :class:`RerankedScores`; pass ``i2t`` as ``scores`` and ``t2i`` as ``t2i_scores`` to
        :func:`full_protocol`.
    """
    scores = _check_scores(scores).float().cpu()
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    if rule not in ("log_odds", "lavis"):
        raise ValueError(f"unknown re-ranking rule {rule!r}; expected 'log_odds' or 'lavis'")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    itc_scale = 1.0 / temperature if rule == "log_odds" and temperature is not None else 1.0
    n, m = scores.shape
    i2t = _rerank_rows(scores, min(k, m), lambda i, t: _itm_scores(itm_fn, i, t, batch_size, rule), itc_scale)
    t2i = _rerank_rows(scores.t(), min(k, n), lambda t, i: _itm_scores(itm_fn, i, t, batch_size, rule), itc_scale).t()
    return RerankedScores(i2t, t2i.contiguous())


# ----------------------------------------------------------------------------------------------
# Flat metric keys
# ----------------------------------------------------------------------------------------------


def prefix_metrics(prefix: str, protocol: str, result: dict[str, float]) -> dict[str, float]:
    """``("cmr/fashiongen", "full", {"i2t/R@1": x})`` -> ``{"cmr/fashiongen/full/i2t/R@1": x}``."""
    return {f"{prefix.rstrip('/')}/{protocol}/{key}": value for key, value in result.items()}


@dataclass
class RetrievalEvalConfig:
    """Which CMR protocols to run and how (DATASETS.md 6.1)."""

    full: bool = True
    """Run the full-set protocol (every image vs one text per product)."""
    sample100: bool = True
    """Run the FashionViL sample-100 protocol (needs sub-categories)."""
    block100: bool = False
    """Run UniFashion's block-100 protocol (needs a square pairs x pairs score matrix)."""
    ks: tuple[int, ...] = DEFAULT_KS
    """Recall cut-offs."""
    num_queries: int = 1000
    """sample100: queries per direction and repeat."""
    num_negatives: int = 100
    """sample100: same-sub-category negatives per gallery."""
    repeats: int = 5
    """sample100: seeded repeats averaged."""
    seed: int = 0
    """sample100: seed of the gallery sampling."""
    block_size: int = 100
    """block100: pairs per block."""


def retrieval_metrics(
    scores: Tensor,
    image_product_ids: Tensor | Sequence[int],
    text_product_ids: Tensor | Sequence[int],
    image_subcats: Subcats | None = None,
    text_subcats: Subcats | None = None,
    *,
    prefix: str = "cmr/fashiongen",
    config: RetrievalEvalConfig | None = None,
    block_scores: Tensor | None = None,
) -> dict[str, float]:
    """Run the configured protocols and return flat ``prefix/protocol/direction/metric`` keys.

    Args:
        scores: float (N_img, M_txt) similarities (images vs one text per product).
        image_product_ids: (N,) product of each image.
        text_product_ids: (M,) product of each text.
        image_subcats: N sub-categories of the images (sample100 only).
        text_subcats: M sub-categories of the texts (sample100 only).
        prefix: ``task/dataset`` prefix.
        config: protocols and their settings; default :class:`RetrievalEvalConfig()`.
        block_scores: (P, P) pair scores for block100 (default: ``scores`` when it is square).

    Returns:
        e.g. ``{"cmr/fashiongen/full/i2t/R@1": .., "cmr/fashiongen/sample100/mean/R": .., ...}``.
    """
    config = config or RetrievalEvalConfig()
    out: dict[str, float] = {}
    if config.full:
        out |= prefix_metrics(
            prefix, "full", full_protocol(scores, image_product_ids, text_product_ids, ks=config.ks)
        )
    if config.sample100:
        if image_subcats is None or text_subcats is None:
            raise ValueError("sample100 needs image_subcats and text_subcats")
        result = sample100_protocol(
            scores,
            image_product_ids,
            text_product_ids,
            image_subcats,
            text_subcats,
            num_queries=config.num_queries,
            num_negatives=config.num_negatives,
            repeats=config.repeats,
            seed=config.seed,
            ks=config.ks,
        )
        out |= prefix_metrics(prefix, "sample100", result)
    if config.block100:
        pairs = scores if block_scores is None else block_scores
        out |= prefix_metrics(prefix, "block100", block100_protocol(pairs, config.block_size, ks=config.ks))
    return out
