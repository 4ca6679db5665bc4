"""Fashion image captioning (FIC) of a model on FashionGen validation (DATASETS.md 6.2)."""

from __future__ import annotations

from pathlib import Path

from unifashion.api import UniFashion
from unifashion.data.batch import RetrievalSplit
from unifashion.data.roots import fashiongen_root
from unifashion.tasks.cmr.evaluate import SplitImages, fashiongen_split
from unifashion.tasks.fic.attributes import SIDECAR, attribute_accuracy, read_product_attributes
from unifashion.tasks.fic.protocol import caption_metrics, metric_keys

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def first_image_per_product(split: RetrievalSplit, max_items: int | None = None) -> list[tuple[int, int]]:
    """(image index, text index) of the first image of each product, in text order."""
    first: dict[int, int] = {}
    for i, pid in enumerate(split.image_product_ids.tolist()):
        first.setdefault(pid, i)
    pairs = [(first[pid], j) for j, pid in enumerate(split.text_product_ids.tolist())]
    return pairs[:max_items] if max_items else pairs


def caption_split(model: UniFashion, split: RetrievalSplit, pairs: list[tuple[int, int]], style: str = "fashiongen",
                  batch_size: int = 32, **gen_kwargs) -> dict[int, str]:
    """Captions of the images `pairs` (image index, text index) of a split -> {text index: caption}."""
    images = SplitImages(split.images)
    captions = model.caption([images[i] for i, _ in pairs], style=style, batch_size=batch_size, **gen_kwargs)
    return {j: c for (_, j), c in zip(pairs, captions)}


def run_fic(model: UniFashion, data_root, *, prefix: str = "", max_items: int | None = None, num_beams: int = 1,
            max_new_tokens: int = 48, metrics=None, examples: list | None = None,
            batch_size: int = 100) -> dict[str, float]:
    """FashionGen captioning metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr x 100).

    One caption per product, generated from its first validation image; the reference is the
    product's description (one reference per product, DATASETS.md 6.2; references in the `gts`
    slot, predictions in `res`).

    Args:
        model: a `UniFashion` model with a captioner.
        data_root: the synthetic root (with fashiongen/) or a FashionGen root.
        prefix: prepended to every metric key (e.g. "baseline/").
        max_items: caption only the first this many validation products (None: all).
        num_beams: beam width (1: greedy).
        max_new_tokens: longest generated caption in tokens.
        metrics: subset of `tasks.fic.protocol.METRICS` (None: all; METEOR starts a JVM).
        examples: when given, receives the (prediction, reference) pairs in product order.
        batch_size: images captioned per `generate` call.

    Returns:
        ``{prefix + "fic/fashiongen/<metric>": value}``; on synthetic data (a sidecar
        ``attributes.jsonl`` beside the HDF5 files) also ``fic/fashiongen/attributes/<name>``, the
        percent of products whose caption names the right primary colour, pattern, sleeve and
        garment (`tasks.fic.attributes`).
    """
    model._require("caption")
    split = fashiongen_split(model, data_root)
    pairs = first_image_per_product(split, max_items)
    preds = caption_split(model, split, pairs, "fashiongen", batch_size=batch_size, num_beams=num_beams,
                          max_new_tokens=max_new_tokens)
    refs = {j: [split.texts[j]] for _, j in pairs}
    kwargs = {"metrics": metrics} if metrics else {}
    scores = caption_metrics(preds, refs, **kwargs)
    sidecar = fashiongen_root(data_root) / SIDECAR
    if sidecar.is_file():  # synthetic data: do the captions name the right attributes?
        truth = read_product_attributes(sidecar, "validation")
        by_product = {int(split.text_product_ids[j]): preds[j] for _, j in pairs}
        scores |= {f"attributes/{k}": v for k, v in attribute_accuracy(by_product, truth).items()}
    if examples is not None:
        examples.extend((preds[j], split.texts[j]) for _, j in pairs)
    return {prefix + k: v for k, v in metric_keys("fashiongen", scores).items()}


def caption_folder(model: UniFashion, folder: str | Path, style: str = "fashiongen", **kwargs) -> dict[str, str]:
    """Captions of every image of a folder: {file name: caption}."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return dict(zip((f.name for f in files), model.caption(files, style=style, **kwargs)))


def caption_fashiongen(model: UniFashion, data_root, style: str = "fashiongen", **kwargs) -> dict[str, str]:
    """Captions of the first validation image of every FashionGen product: {product id: caption}."""
    split = fashiongen_split(model, data_root)
    caps = caption_split(model, split, first_image_per_product(split), style, **kwargs)
    return {str(split.text_product_ids[j].item()): c for j, c in caps.items()}
