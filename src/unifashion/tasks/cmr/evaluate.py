"""Cross-modal retrieval (CMR) of a model on FashionGen validation (DATASETS.md 6.1).

Encodes a product-level split with the `UniFashion` API and hands the features to the protocols of
`tasks.cmr.protocol` (full, sample100, block100, ITM re-ranking of the ITC top-k).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from unifashion.api import UniFashion
from unifashion.data.batch import RetrievalSplit
from unifashion.data.roots import fashiongen_root
from unifashion.scoring import score_matrix
from unifashion.tasks.cmr.protocol import (
    RetrievalEvalConfig,
    full_protocol,
    itm_rerank,
    prefix_metrics,
    retrieval_metrics,
)


class SplitImages:
    """The images of a split's dataset (items are dicts with "image"), as a sequence of tensors."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        if item is None:
            raise ValueError(f"evaluation image {i} could not be read; evaluate with on_bad_sample='raise' to see which")
        return item["image"]


def fashiongen_split(model: UniFashion, data_root: str | Path, split: str = "validation",
                     batch_size: int = 128) -> RetrievalSplit:
    """The product-level FashionGen split of a data root, at the model's image size."""
    from unifashion.data.fashiongen import FashionGenDataModule

    dm = FashionGenDataModule(root=str(fashiongen_root(data_root)), batch_size=batch_size,
                              image_size=model.encoder.config.image_size)
    return dm.retrieval_split(split)


class ItmScorer:
    """ITM logits (P, 2) of (image index, text index) pairs of a split, for re-ranking: every image goes
    through the vision model once, and a batch of pairs asked for again (the second re-ranking rule)
    is answered from memory."""

    def __init__(self, model: UniFashion, split: RetrievalSplit, batch_size: int = 128) -> None:
        self.model, self.split, self.batch_size = model, split, batch_size
        self._vision: torch.Tensor | None = None
        self._memo: dict[tuple[bytes, bytes], torch.Tensor] = {}

    def __call__(self, image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        key = (image_idx.numpy().tobytes(), text_idx.numpy().tobytes())
        if key not in self._memo:
            if self._vision is None:
                self._vision = self.model.vision_features(SplitImages(self.split.images), self.batch_size)  # (N, P, Hv)
            self._memo[key] = self.model.match(None, [self.split.texts[int(t)] for t in text_idx],
                                               image_index=image_idx, output="logits",
                                               batch_size=self.batch_size, vision=self._vision)
        return self._memo[key]


def evaluate_cmr(model: UniFashion, split: RetrievalSplit, *, prefix: str = "cmr/fashiongen",
                 config: RetrievalEvalConfig | None = None, rerank_k: int = 0,
                 batch_size: int = 128) -> dict[str, float]:
    """Cross-modal retrieval metrics of `model` on a product-level split.

    Returns flat keys `prefix/protocol/direction/metric` (recall in percent); with `rerank_k` > 0
    the full protocol is repeated with ITM re-ranking of the ITC top-k: protocol `full_itm` (ITM
    log-odds + ITC logit, `itm_rerank`'s default) and `full_itm_lavis` (LAVIS's logit + similarity).
    """
    image_feats = model.embed_images(SplitImages(split.images), batch_size)  # (N, Q, E)
    text_feats = model.embed_texts(split.texts)  # (M, E)
    scores = score_matrix(image_feats, text_feats)  # (N, M)
    metrics = retrieval_metrics(scores, split.image_product_ids, split.text_product_ids,
                                split.image_subcategories, split.text_subcategories, prefix=prefix, config=config)
    if rerank_k > 0:
        itm_fn = ItmScorer(model, split, batch_size)
        for protocol, rule in (("full_itm", "log_odds"), ("full_itm_lavis", "lavis")):
            reranked = itm_rerank(scores, itm_fn, k=rerank_k, rule=rule, temperature=model.temperature)
            result = full_protocol(reranked.i2t, split.image_product_ids, split.text_product_ids,
                                   t2i_scores=reranked.t2i)
            metrics |= prefix_metrics(prefix, protocol, result)
    return metrics


def run_cmr(model: UniFashion, data_root: str | Path, *, protocols: Sequence[str] = ("full", "sample100"),
            rerank_k: int = 0, seed: int = 0, prefix: str = "", batch_size: int = 128, num_queries: int = 1000,
            num_negatives: int = 100) -> dict[str, float]:
    """FashionGen cross-modal retrieval metrics of a model (flat keys, optional prefix such as "baseline/")."""
    split = fashiongen_split(model, data_root, batch_size=batch_size)
    config = RetrievalEvalConfig(full="full" in protocols, sample100="sample100" in protocols,
                                 block100="block100" in protocols, seed=seed, num_queries=num_queries,
                                 num_negatives=num_negatives)
    metrics = evaluate_cmr(model, split, config=config, rerank_k=rerank_k, batch_size=batch_size)
    return {prefix + k: v for k, v in metrics.items()}
