"""Glue between a trained model, the data modules and the evaluation protocols.

The protocols themselves (eval/retrieval.py, eval/captioning.py, eval/generation.py) work on
tensors and strings; this module encodes a split with the model and hands the results over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from unifashion.data.batch import RetrievalSplit
from unifashion.eval.retrieval import RetrievalEvalConfig, itm_rerank, retrieval_metrics
from unifashion.models.encoder import MultimodalEncoder


def _stack_images(items: list) -> torch.Tensor:
    if any(it is None for it in items):
        raise ValueError("an evaluation image could not be read; evaluate with on_bad_sample='raise' to see which")
    return torch.stack([it["image"] for it in items])  # (b, 3, S, S)


@torch.no_grad()
def encode_images(
    encoder: MultimodalEncoder, images, batch_size: int = 128, num_workers: int = 0
) -> torch.Tensor:
    """ITC features of every image of a dataset: (N, Q, E); the dataset yields dicts with "image"."""
    device = encoder.temp.device
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_stack_images)
    feats = []
    for pixels in loader:
        feats.append(encoder.encode_image(pixels.to(device)).image_feats.float().cpu())  # (b, Q, E)
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(encoder: MultimodalEncoder, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """ITC features of texts: (M, E)."""
    feats = []
    for start in range(0, len(texts), batch_size):
        tok = encoder.tokenize(texts[start : start + batch_size])
        feats.append(encoder.encode_text(tok["input_ids"], tok["attention_mask"]).text_feat.float().cpu())
    return torch.cat(feats)


def _itm_fn(encoder: MultimodalEncoder, split: RetrievalSplit) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """ITM logits of (image index, text index) pairs of a split, for re-ranking."""
    device = encoder.temp.device

    @torch.no_grad()
    def fn(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(image_idx, return_inverse=True)  # each image through the ViT once
        pixels = torch.stack([split.images[int(i)]["image"] for i in unique]).to(device)
        vision = encoder.encode_vision(pixels)[inverse.to(device)]  # (P, patches, Hv)
        tok = encoder.tokenize([split.texts[int(t)] for t in text_idx])
        return encoder.itm_logits(vision, tok["input_ids"], tok["attention_mask"])[:, 1]  # (P,)

    return fn


def evaluate_cmr(
    encoder: MultimodalEncoder,
    split: RetrievalSplit,
    *,
    prefix: str = "cmr/fashiongen",
    config: RetrievalEvalConfig | None = None,
    rerank_k: int = 0,
    batch_size: int = 128,
) -> dict[str, float]:
    """Cross-modal retrieval metrics of `encoder` on a product-level split (DATASETS.md 6.1).

    Returns flat keys `prefix/protocol/direction/metric` (recall in percent); with `rerank_k` > 0
    the full protocol is repeated with ITM re-ranking of the ITC top-k as protocol `full_itm`.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        image_feats = encode_images(encoder, split.images, batch_size)  # (N, Q, E)
        text_feats = encode_texts(encoder, split.texts)  # (M, E)
        from unifashion.eval.retrieval import score_matrix

        scores = score_matrix(image_feats, text_feats)  # (N, M)
        metrics = retrieval_metrics(
            scores,
            split.image_product_ids,
            split.text_product_ids,
            split.image_subcategories,
            split.text_subcategories,
            prefix=prefix,
            config=config,
        )
        if rerank_k > 0:
            from unifashion.eval.retrieval import full_protocol, prefix_metrics

            reranked = itm_rerank(scores, _itm_fn(encoder, split), k=rerank_k)
            result = full_protocol(
                reranked.i2t, split.image_product_ids, split.text_product_ids, t2i_scores=reranked.t2i
            )
            metrics |= prefix_metrics(prefix, "full_itm", result)
    finally:
        encoder.train(was_training)
    return metrics
