"""Composed image retrieval (CIR) evaluation on precomputed features (DATASETS.md 6.3, 6.4).

Everything here works on features the model has already produced (tasks/cir/evaluate.py makes them):

- a composed query (reference image + modifying text) is one vector ``query_feats`` float (M, E):
  e_cls, the L2-normalised projected text [CLS] output of the bi-directional pass (eq. 9);
- a gallery image is its Q query embeddings ``image_feats`` float (N, Q, E) (Z_T, queries only) and,
  optionally, ``caption_feats`` float (N, E): the text-only [CLS] feature of the caption the model
  generated for that gallery image (Z_C; the caption comes from the image alone).

Score (paper section 3.4; the released code's inference score)::

    s(query, g) = w_img * max_q (e_cls . Z_T[g, q])  +  w_cap * (e_cls . Z_C[g])

The three rows of Table 4 are settings of the two weights (:data:`ROWS`): ``full`` (1, w),
``nocap`` "w/o cap" (1, 0) and ``noimg`` "w/o img" (0, 1). Gallery features are computed once per
gallery and every query is scored against them with chunked matrix products
(:func:`unifashion.scoring.score_matrix`), never a loop over pairs.

Ranking: a gallery item scoring *equal to or above* the item being looked for counts as ranked
before it (pessimistic ties), so a constant-score model gets no free hits.

- :func:`fashioniq_protocol`: per category, gallery = every image of the split file, every query
  of ``cap.<cat>.val.json`` counted (C4C protocol: the reference image stays in the gallery),
  R@10 / R@50 per category, their means over the categories and ``avg`` = (mean R@10 + mean R@50) / 2.
  Keys ``<row>/fashioniq/<cat>/R@10``, ``<row>/fashioniq/mean/R@10|R@50|avg`` with row ``cir``
  (full), ``cir_nocap`` and ``cir_noimg``.
- :func:`fashion200k_protocol` (TIRG ``test_retrieval.py``): gallery = every test image, the query's
  own image is excluded from its ranking, a hit is any retrieved image whose caption equals the
  target caption; R@1/10/50 under ``<row>/fashion200k/R@k``.
Recalls are in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unifashion.scoring import score_matrix

ROWS: dict[str, tuple[float | None, float | None]] = {"cir": (1.0, None), "cir_nocap": (1.0, 0.0), "cir_noimg": (0.0, 1.0)}
"""Row name -> (image-term weight, caption-term weight); None means "the caption weight w"."""

FASHIONIQ_KS = (10, 50)
FASHION200K_KS = (1, 10, 50)


@dataclass
class CirGallery:
    """One gallery's features, computed once and reused by every query.

    Attributes:
        image_ids: the N gallery image ids (Fashion-IQ ASINs, Fashion200K paths), in order.
        image_feats: float (N, Q, E) L2-normalised projected query outputs Z_T of each image.
        caption_feats: float (N, E) L2-normalised text-only [CLS] features Z_C of each image's
            generated caption, or None (then only the ``nocap`` row can be scored).
        captions: optional N ground-truth captions (Fashion200K: a hit is a caption match).
    """

    image_ids: list[str]
    image_feats: Tensor
    caption_feats: Tensor | None = None
    captions: list[str] | None = None

    def __post_init__(self) -> None:
        if self.image_feats.dim() == 2:
            self.image_feats = self.image_feats.unsqueeze(1)  # (N, 1, E)
        n = len(self.image_ids)
        if self.image_feats.dim() != 3 or self.image_feats.shape[0] != n:
            raise ValueError(f"CirGallery: image_feats must be ({n}, Q, E), got {tuple(self.image_feats.shape)}")
        if self.caption_feats is not None and tuple(self.caption_feats.shape) != (n, self.image_feats.shape[2]):
            raise ValueError(
                f"CirGallery: caption_feats must be ({n}, {self.image_feats.shape[2]}), got "
                f"{tuple(self.caption_feats.shape)}"
            )
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"CirGallery: {len(self.captions)} captions for {n} images")
        if len(set(self.image_ids)) != n:
            raise ValueError("CirGallery: image_ids must be unique within a gallery")

    def index(self) -> dict[str, int]:
        """Image id -> row."""
        return {asin: i for i, asin in enumerate(self.image_ids)}


@dataclass
class CirQueries:
    """Composed queries of one gallery.

    Attributes:
        query_feats: float (M, E) L2-normalised composed features e_cls.
        reference_ids: the M reference image ids.
        target_ids: the M target image ids (Fashion-IQ), or None.
        target_captions: the M target captions (Fashion200K), or None.
    """

    query_feats: Tensor
    reference_ids: list[str]
    target_ids: list[str] | None = None
    target_captions: list[str] | None = None

    def __post_init__(self) -> None:
        m = len(self.reference_ids)
        if self.query_feats.dim() != 2 or self.query_feats.shape[0] != m:
            raise ValueError(f"CirQueries: query_feats must be ({m}, E), got {tuple(self.query_feats.shape)}")
        for name in ("target_ids", "target_captions"):
            value = getattr(self, name)
            if value is not None and len(value) != m:
                raise ValueError(f"CirQueries: {len(value)} {name} for {m} queries")


def row_weights(row: str, caption_weight: float) -> tuple[float, float]:
    """(image weight, caption weight) of a row of :data:`ROWS`."""
    if row not in ROWS:
        raise ValueError(f"unknown CIR row {row!r}; known rows: {sorted(ROWS)}")
    w_img, w_cap = ROWS[row]
    return float(w_img), float(caption_weight if w_cap is None else w_cap)


def cir_scores(
    query_feats: Tensor,
    image_feats: Tensor,
    caption_feats: Tensor | None = None,
    image_weight: float = 1.0,
    caption_weight: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """Composed-retrieval scores of every query against every gallery image.

    s[m, n] = image_weight * max_q query_feats[m] . image_feats[n, q]
              + caption_weight * query_feats[m] . caption_feats[n]

    Args:
        query_feats: float (M, E) composed features.
        image_feats: float (N, Q, E) gallery query embeddings (or (N, E)).
        caption_feats: float (N, E) gallery caption features, or None (needs ``caption_weight`` 0).
        image_weight, caption_weight: the two weights (a 0 weight skips its matrix product).
        chunk_size: gallery images per chunk of the image term (see ``score_matrix``).

    Returns:
        float (M, N) scores.
    """
    if query_feats.dim() != 2:
        raise ValueError(f"query_feats must be (M, E), got {tuple(query_feats.shape)}")
    n, m = image_feats.shape[0], query_feats.shape[0]
    scores = torch.zeros(m, n, dtype=torch.float32, device=query_feats.device)  # (M, N)
    if image_weight != 0:
        image_term = score_matrix(image_feats, query_feats, chunk_size=chunk_size)  # (N, M), max over q
        scores += image_weight * image_term.t()
    if caption_weight != 0:
        if caption_feats is None:
            raise ValueError("caption_weight != 0 needs caption_feats (the gallery's generated-caption features)")
        scores += caption_weight * (query_feats.float() @ caption_feats.float().t())  # (M, N)
    return scores


def ranks_of_positives(scores: Tensor, positive: Tensor, excluded: Tensor | None = None) -> Tensor:
    """Per query: gallery items that are neither positive nor excluded scoring >= its best positive.

    Args:
        scores: float (M, N).
        positive: bool (M, N), the items that count as hits.
        excluded: bool (M, N) items removed from the ranking (the query's own image), or None.

    Returns:
        long (M,) 0-based rank of the best positive (pessimistic ties).
    """
    if excluded is not None:
        positive = positive & ~excluded
    if not bool(positive.any(dim=1).all()):
        bad = int((~positive.any(dim=1)).nonzero()[0])
        raise ValueError(f"query {bad} has no positive gallery item")
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)  # (M, 1)
    before = (scores >= best) & ~positive  # (M, N)
    if excluded is not None:
        before &= ~excluded
    return before.sum(dim=1)  # (M,)


def _recalls(ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    return {f"R@{k}": (ranks < k).double().mean().item() * 100.0 for k in ks}


def _query_chunks(m: int, chunk: int):
    for start in range(0, m, chunk):
        yield slice(start, min(m, start + chunk))


def fashioniq_category_ranks(
    gallery: CirGallery,
    queries: CirQueries,
    image_weight: float,
    caption_weight: float,
    query_chunk: int = 1024,
) -> Tensor:
    """0-based rank of each query's target in its category gallery (every query, none dropped)."""
    if queries.target_ids is None:
        raise ValueError("Fashion-IQ queries need target_ids (the test split has none: evaluate on val)")
    index = gallery.index()
    missing = sorted({t for t in queries.target_ids if t not in index})
    if missing:
        raise ValueError(
            f"{len(missing)} Fashion-IQ targets are not in the category gallery (e.g. {missing[:3]}); the gallery "
            "must be every image of the split file"
        )
    target = torch.tensor([index[t] for t in queries.target_ids], dtype=torch.long)  # (M,)
    n = len(gallery.image_ids)
    ranks = []
    for sl in _query_chunks(len(target), query_chunk):
        scores = cir_scores(queries.query_feats[sl], gallery.image_feats, gallery.caption_feats,
                            image_weight, caption_weight).cpu()  # (c, N)
        positive = torch.zeros(scores.shape[0], n, dtype=torch.bool)
        positive[torch.arange(scores.shape[0]), target[sl]] = True  # (c, N)
        ranks.append(ranks_of_positives(scores, positive))
    return torch.cat(ranks)


def fashioniq_protocol(
    galleries: Mapping[str, CirGallery],
    queries: Mapping[str, CirQueries],
    caption_weight: float = 1.0,
    rows: Sequence[str] | None = None,
    ks: Sequence[int] = FASHIONIQ_KS,
    prefix: str = "",
) -> dict[str, float]:
    """Fashion-IQ validation protocol (DATASETS.md 6.3) for every category and row.

    Args:
        galleries: category -> its gallery (every image of ``split.<cat>.val.json``).
        queries: category -> its queries (every triplet of ``cap.<cat>.val.json``); same keys.
        caption_weight: w, the weight of the caption term in the ``full`` row.
        rows: the rows to score (default: all whose features exist; without caption features
            only ``cir_nocap``).
        ks: cut-offs (R@10, R@50).
        prefix: prepended to every key (e.g. ``baseline/``).

    Returns:
        ``{prefix}<row>/fashioniq/<cat>/R@k``, ``.../mean/R@k`` and ``.../mean/avg`` (mean of the mean
        recalls), plus ``{prefix}<row>/fashioniq/<cat>/num_queries``.
    """
    if set(galleries) != set(queries) or not galleries:
        raise ValueError(f"galleries {sorted(galleries)} and queries {sorted(queries)} must cover the same categories")
    has_captions = all(g.caption_feats is not None for g in galleries.values())
    if rows is None:
        rows = tuple(ROWS) if has_captions else ("cir_nocap",)
    out: dict[str, float] = {}
    cats = list(galleries)
    for row in rows:
        w_img, w_cap = row_weights(row, caption_weight)
        per_cat: dict[str, dict[str, float]] = {}
        for cat in cats:
            ranks = fashioniq_category_ranks(galleries[cat], queries[cat], w_img, w_cap)
            per_cat[cat] = _recalls(ranks, ks)
            for name, value in per_cat[cat].items():
                out[f"{prefix}{row}/fashioniq/{cat}/{name}"] = value
            out[f"{prefix}{row}/fashioniq/{cat}/num_queries"] = float(len(ranks))
        means = {f"R@{k}": sum(per_cat[c][f"R@{k}"] for c in cats) / len(cats) for k in ks}
        for name, value in means.items():
            out[f"{prefix}{row}/fashioniq/mean/{name}"] = value
        out[f"{prefix}{row}/fashioniq/mean/avg"] = sum(means.values()) / len(means)
    return out


def fashion200k_protocol(
    gallery: CirGallery,
    queries: CirQueries,
    caption_weight: float = 1.0,
    rows: Sequence[str] | None = None,
    ks: Sequence[int] = FASHION200K_KS,
    prefix: str = "",
    query_chunk: int = 1024,
) -> dict[str, float]:
    """Fashion200K composed retrieval, TIRG protocol (DATASETS.md 6.4).

    Args:
        gallery: every test image, with ``captions`` (the label files' captions).
        queries: the TIRG queries with ``target_captions``; ``reference_ids`` are gallery ids.
        caption_weight, rows, ks, prefix: as :func:`fashioniq_protocol`.

    Returns:
        ``{prefix}<row>/fashion200k/R@k`` and ``.../num_queries``.
    """
    if gallery.captions is None or queries.target_captions is None:
        raise ValueError("Fashion200K needs gallery captions and query target captions (a hit is a caption match)")
    index = gallery.index()
    missing = sorted({r for r in queries.reference_ids if r not in index})
    if missing:
        raise ValueError(f"{len(missing)} query images are not in the Fashion200K gallery (e.g. {missing[:3]})")
    vocab: dict[str, int] = {}
    gallery_caption = torch.tensor([vocab.setdefault(c, len(vocab)) for c in gallery.captions], dtype=torch.long)
    target_caption = torch.tensor([vocab.get(c, -1) for c in queries.target_captions], dtype=torch.long)
    reference = torch.tensor([index[r] for r in queries.reference_ids], dtype=torch.long)  # (M,)
    if rows is None:
        rows = tuple(ROWS) if gallery.caption_feats is not None else ("cir_nocap",)
    out: dict[str, float] = {}
    n = len(gallery.image_ids)
    for row in rows:
        w_img, w_cap = row_weights(row, caption_weight)
        ranks = []
        for sl in _query_chunks(len(reference), query_chunk):
            scores = cir_scores(queries.query_feats[sl], gallery.image_feats, gallery.caption_feats,
                                w_img, w_cap).cpu()  # (c, N)
            positive = gallery_caption[None, :] == target_caption[sl, None]  # (c, N)
            excluded = torch.zeros(scores.shape[0], n, dtype=torch.bool)
            excluded[torch.arange(scores.shape[0]), reference[sl]] = True  # the query's own image
            ranks.append(ranks_of_positives(scores, positive, excluded))
        ranks = torch.cat(ranks)
        for name, value in _recalls(ranks, ks).items():
            out[f"{prefix}{row}/fashion200k/{name}"] = value
        out[f"{prefix}{row}/fashion200k/num_queries"] = float(len(ranks))
    return out
