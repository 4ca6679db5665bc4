"""Composed image retrieval (CIR) of a model: Fashion-IQ validation and Fashion200K (TIRG).

Encodes each category's gallery once (Z_T query features of every image of the split file and the
text-only features Z_C of every gallery image's generated caption, read from a Fashion-IQ-cap file
that `tasks.cir.captions` wrote from the gallery images alone) and every query (reference image +
"C1 and c2" -> e_cls, eq. 9), then hands the features to `tasks.cir.protocol`.

Query modes (the demo's baselines use the last two):
- ``composed``: e_cls of the bi-directional pass (the model's composed query);
- ``image``: the reference image alone, its L2-normalised mean projected query feature;
- ``text``: the modifying text alone, its text-only [CLS] feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from unifashion.api import UniFashion
from unifashion.data.fashioniq import CATEGORIES, FashionIQDataModule, eval_text, read_caption_file
from unifashion.data.files import load_image
from unifashion.tasks.cir.captions import CAPTIONS_FILE
from unifashion.tasks.cir.protocol import CirGallery, CirQueries, fashion200k_protocol, fashioniq_protocol

QueryMode = Literal["composed", "image", "text"]


def _pixels(dm, paths: Sequence[Path], start: int, size: int) -> torch.Tensor:
    return torch.stack([dm.eval_transform(load_image(p)) for p in paths[start : start + size]])


def encode_gallery(model: UniFashion, dm, image_paths: Sequence[Path], batch_size: int = 64) -> torch.Tensor:
    """Z_T features of gallery images: float (N, Q, E)."""
    feats = [model.embed_images(_pixels(dm, image_paths, s, batch_size), batch_size=batch_size)
             for s in range(0, len(image_paths), batch_size)]
    return torch.cat(feats)


def encode_queries(
    model: UniFashion, dm, reference_paths: Sequence[Path], texts: Sequence[str], mode: QueryMode = "composed",
    batch_size: int = 64,
) -> torch.Tensor:
    """Query features float (M, E) of reference images + modifying texts (`mode`: see module docstring)."""
    if len(reference_paths) != len(texts):
        raise ValueError(f"{len(reference_paths)} reference images for {len(texts)} texts")
    if mode == "text":
        return model.embed_texts(list(texts))
    out = []
    for s in range(0, len(texts), batch_size):
        pixels = _pixels(dm, reference_paths, s, batch_size)
        if mode == "composed":
            out.append(model.compose(pixels, list(texts[s : s + batch_size]), batch_size=batch_size))
        elif mode == "image":
            feats = model.embed_images(pixels, batch_size=batch_size)  # (b, Q, E)
            out.append(F.normalize(feats.mean(dim=1), dim=-1))  # (b, E)
        else:
            raise ValueError(f"unknown query mode {mode!r}; expected composed, image or text")
    return torch.cat(out) if out else torch.empty(0)


def fashioniq_features(
    model: UniFashion,
    data_root: str | Path,
    captions: str | Path | None = None,
    split: str = "val",
    categories: Sequence[str] = CATEGORIES,
    modes: Sequence[QueryMode] = ("composed",),
    batch_size: int = 64,
) -> tuple[dict[str, CirGallery], dict[str, dict[str, CirQueries]]]:
    """Gallery features (once per category) and the queries of every mode.

    Args:
        captions: Fashion-IQ-cap pattern or directory (``<dir>/next_llava.{split}.{cat}.caption.json``);
            None: no caption term (only the ``cir_nocap`` row can be scored).

    Returns:
        (category -> gallery, mode -> category -> queries).
    """
    dm = FashionIQDataModule(root=str(data_root), categories=tuple(categories), batch_size=batch_size,
                             image_size=model.encoder.config.image_size)
    pattern = None
    if captions is not None:
        pattern = str(Path(captions) / CAPTIONS_FILE) if Path(captions).is_dir() else str(captions)
    galleries: dict[str, CirGallery] = {}
    queries: dict[str, dict[str, CirQueries]] = {m: {} for m in modes}
    for cat in categories:
        ids = dm.image_ids(cat, split)
        feats = encode_gallery(model, dm, [dm.images.path(a) for a in ids], batch_size)
        cap_feats = None
        if pattern is not None:
            caps = read_caption_file(dm.caption_file(cat, split, pattern))
            lacking = [a for a in ids if a not in caps]
            if lacking:
                raise ValueError(f"{len(lacking)} {cat}/{split} gallery images have no generated caption "
                                 f"(e.g. {lacking[:3]}); caption the whole split file")
            cap_feats = model.embed_texts([caps[a] for a in ids])
        galleries[cat] = CirGallery(list(ids), feats, cap_feats)
        triplets = dm.triplets(cat, split)
        refs = [dm.images.path(t.candidate) for t in triplets]
        texts = [eval_text(t.captions) for t in triplets]
        for mode in modes:
            q = encode_queries(model, dm, refs, texts, mode, batch_size)
            queries[mode][cat] = CirQueries(q, [t.candidate for t in triplets], [t.target for t in triplets])
    return galleries, queries


def run_cir(
    model: UniFashion,
    data_root: str | Path,
    captions: str | Path | None = None,
    *,
    split: str = "val",
    categories: Sequence[str] = CATEGORIES,
    caption_weight: float = 1.0,
    modes: Sequence[QueryMode] = ("composed",),
    prefix: str = "",
    batch_size: int = 64,
) -> dict[str, float]:
    """Fashion-IQ CIR metrics (``cir/fashioniq/...``, ``cir_nocap/...``, ``cir_noimg/...``).

    A mode other than ``composed`` is prefixed ``<mode>_only/`` (e.g. ``image_only/cir/fashioniq/mean/avg``).
    """
    galleries, queries = fashioniq_features(model, data_root, captions, split, categories, modes, batch_size)
    out: dict[str, float] = {}
    for mode in modes:
        tag = prefix + ("" if mode == "composed" else f"{mode}_only/")
        out |= fashioniq_protocol(galleries, queries[mode], caption_weight=caption_weight, prefix=tag)
    return out


def run_cir_fashion200k(
    model: UniFashion,
    root: str | Path,
    captions: str | Path | dict[str, str] | None = None,
    *,
    caption_weight: float = 1.0,
    prefix: str = "",
    batch_size: int = 64,
) -> dict[str, float]:
    """Fashion200K composed retrieval (TIRG protocol): ``<row>/fashion200k/R@{1,10,50}``.

    Gallery = every test image (Z_T once each), queries = TIRG's ``test_queries.txt`` with their
    "replace X with Y" texts (e_cls); a hit is a gallery image whose caption equals the target's,
    the query image excluded (`protocol.fashion200k_protocol`).

    Args:
        root: the Fashion200K root (labels/, women/, test_queries.txt).
        captions: the gallery's generated captions for the caption term: a file written by
            `captions.write_fashion200k_captions` (or its folder), or image path -> caption; None:
            only the image term (row ``cir_nocap``).
    """
    from unifashion.data.fashion200k import Fashion200KDataModule
    from unifashion.tasks.cir.captions import FASHION200K_CAPTIONS_FILE

    dm = Fashion200KDataModule(root=str(root), batch_size=batch_size, image_size=model.encoder.config.image_size)
    entries = dm.entries("test")
    paths = [dm.root_dir / e.path for e in entries]
    feats = encode_gallery(model, dm, paths, batch_size)
    cap_feats = None
    if captions is not None:
        if not isinstance(captions, dict):
            file = Path(captions)
            file = file / FASHION200K_CAPTIONS_FILE.format(split="test") if file.is_dir() else file
            captions = read_caption_file(file)
        lacking = [e.path for e in entries if e.path not in captions]
        if lacking:
            raise ValueError(f"{len(lacking)} Fashion200K test images have no generated caption "
                             f"(e.g. {lacking[:3]}); caption the whole test split")
        cap_feats = model.embed_texts([captions[e.path] for e in entries])
    gallery = CirGallery([e.path for e in entries], feats, cap_feats, captions=[e.caption for e in entries])
    qs = dm.test_queries().queries
    q = encode_queries(model, dm, [dm.root_dir / x.source for x in qs], [x.text for x in qs], "composed", batch_size)
    queries = CirQueries(q, [x.source for x in qs], [x.target for x in qs], [x.target_caption for x in qs])
    return fashion200k_protocol(gallery, queries, caption_weight=caption_weight, prefix=prefix)
