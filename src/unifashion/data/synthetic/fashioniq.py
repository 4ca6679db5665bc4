"""Writer of synthetic Fashion-IQ in the official layout (DATASETS.md 2.1-2.4, 2.7).

Writes under ``<root>/fashionIQ_dataset/``:

- ``captions/cap.{dress,shirt,toptee}.{train,val,test}.json``: lists of
  ``{"candidate": ASIN, "target": ASIN, "captions": [str, str]}`` (test files: no ``target``);
  the two captions are two phrasings of the real attribute difference (captions.py);
- ``image_splits/split.{cat}.{split}.json``: lists of ASINs (every candidate and target of the
  split's triplets, plus unused gallery images);
- ``images/<ASIN>.png``: RGB PNGs of varying size; ASINs look like ``B00`` + 7 upper-case
  letters/digits;
- ``attributes.jsonl``: the sidecar (one line per image file; ``categories`` lists every
  category whose split file lists it). The detailed (Fashion-IQ-cap) caption of every image is
  in the sidecar's ``captions.detailed``.
- ``next_llava.{train,val}.{cat}.caption.json``: the UniFashion-only Fashion-IQ-cap files
  (DATASETS.md 2.6): ``[{"image": ASIN, "caption": str, "text_guidance": ""}]``, one entry per
  image of the category's split, the caption being the detailed-style caption. Read them with
  ``FashionIQDataModule(captions_file="next_llava.train.dress.caption.json")``.

Quirks of the real files, reproduced on purpose (DATASETS.md 2.2-2.3): a few empty or
whitespace-only captions (train and val), captions with a leading space, with trailing
punctuation, capitalised; candidate != target always; some shirt-val ASINs are also listed in
toptee-val (and used there as candidates).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unifashion.data.synthetic.attributes import SUBCATEGORIES, Garment, changeable, sample_garment, vary
from unifashion.data.synthetic.captions import detailed, modifying_texts
from unifashion.data.synthetic.common import (
    SIDECAR,
    Progress,
    record,
    rng_for,
    save_png,
    write_json,
    write_jsonl,
)
from unifashion.data.synthetic.render import render_views

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val", "test")
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class FashionIQSpec:
    """What to write.

    Attributes:
        triplets: {split: triplets per category}.
        base_fraction: initial gallery images per triplet (targets are added on top).
        shared_val: shirt-val ASINs also listed in toptee-val.
        size: (min, max) image side in pixels (height and width drawn independently).
        quirk_rates: fraction of captions given each quirk (empty, leading space, trailing
            punctuation, capitalised); at least one empty caption per train/val file with >= 3 triplets.
    """

    triplets: dict[str, int]
    base_fraction: float = 0.6
    shared_val: int = 3
    size: tuple[int, int] = (160, 240)
    quirk_rates: dict[str, float] = field(default_factory=lambda: {
        "empty": 0.01, "leading_space": 0.08, "trailing_punct": 0.15, "capitalised": 0.15})


@dataclass
class _Split:
    gallery: list[Garment]  # in split-file order
    triplets: list[tuple[Garment, Garment, list[str]]]


class _Asins:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set()

    def new(self) -> str:
        while True:
            asin = "B00" + "".join(_ALNUM[int(i)] for i in self.rng.integers(len(_ALNUM), size=7))
            if asin not in self.used:
                self.used.add(asin)
                return asin


def _apply_quirks(triplets: list[dict], rng: np.random.Generator, rates: dict[str, float], allow_empty: bool
                  ) -> None:
    n_caps = 2 * len(triplets)
    flat = [(i, j) for i in range(len(triplets)) for j in range(2)]
    order = rng.permutation(n_caps)
    n_empty = max(1 if allow_empty and len(triplets) >= 3 else 0, int(round(rates["empty"] * n_caps)))
    empties = {flat[int(k)] for k in order[:n_empty]} if allow_empty else set()
    for i, j in flat:
        cap = triplets[i]["captions"][j]
        if (i, j) in empties:
            cap = ["", " ", "  "][int(rng.integers(3))]
        else:
            if rng.random() < rates["capitalised"]:
                cap = cap[:1].upper() + cap[1:]
            if rng.random() < rates["trailing_punct"]:
                cap = cap + [".", "!", " .", ","][int(rng.integers(4))]
            if rng.random() < rates["leading_space"]:
                cap = " " + cap
        triplets[i]["captions"][j] = cap


def plan(spec: FashionIQSpec, seed: int) -> dict[tuple[str, str], _Split]:
    """Galleries and triplets of every (category, split), product ids unique (no rendering)."""
    out: dict[tuple[str, str], _Split] = {}
    next_id = 1
    for split in SPLITS:
        for cat in CATEGORIES:
            rng = rng_for(seed, "fashioniq", cat, split, "plan")
            subs = [s for s in SUBCATEGORIES if s.fiq_category == cat]
            n = spec.triplets[split]
            gallery = []
            for _ in range(max(2, int(round(n * spec.base_fraction)))):
                gallery.append(sample_garment(rng, next_id, subs[int(rng.integers(len(subs)))]))
                next_id += 1
            triplets = []
            for _ in range(n):
                ref = gallery[int(rng.integers(len(gallery)))]
                attrs = changeable(ref)
                k = min(len(attrs), 1 + int(rng.choice(3, p=[0.45, 0.35, 0.2])))
                chosen = [attrs[int(i)] for i in sorted(rng.choice(len(attrs), size=k, replace=False))]
                tgt = vary(ref, rng, chosen, next_id)
                next_id += 1
                gallery.append(tgt)
                triplets.append((ref, tgt, modifying_texts(ref, tgt, rng)))
            out[(cat, split)] = _Split(gallery, triplets)
    # Shared ASINs: some shirt-val images are also in toptee-val, and serve as toptee candidates.
    rng = rng_for(seed, "fashioniq", "shared")
    shirt, toptee = out[("shirt", "val")], out[("toptee", "val")]
    k = min(spec.shared_val, len(shirt.gallery))
    shared = [shirt.gallery[int(i)] for i in sorted(rng.choice(len(shirt.gallery), size=k, replace=False))]
    for ref in shared:
        toptee.gallery.append(ref)
        attrs = changeable(ref)
        tgt = vary(ref, rng, [attrs[int(rng.integers(len(attrs)))]], next_id)
        next_id += 1
        toptee.gallery.append(tgt)
        toptee.triplets.append((ref, tgt, modifying_texts(ref, tgt, rng)))
    return out


CAPTIONS_FILE = "next_llava.{split}.{cat}.caption.json"
"""Fashion-IQ-cap file name (UniFashion's released ``dataset/next_llava.{train,val}.{cat}.caption.json``)."""


def _write_image(args: tuple[Garment, int, int, tuple[int, int], Path]) -> None:
    """Render one product's image with its own seeded generator and save it as PNG."""
    g, seed, pid, size_range, path = args
    rng = rng_for(seed, "fashioniq", "image", pid)
    h, w = (int(x) for x in rng.integers(size_range[0], size_range[1] + 1, size=2))
    save_png(render_views(g, rng, 1, (h, w))[0], path)


def write_fashioniq(root: Path, spec: FashionIQSpec, seed: int = 0, progress: Progress | None = None,
                    workers: int = 1) -> dict:
    """Write captions, split files, images and the sidecar under ``<root>/fashionIQ_dataset``.

    Args:
        root: the Fashion-IQ root (``fashionIQ_dataset/`` is created inside it).
        spec: sizes.
        seed: generation seed.
        progress: called with the number of images written after each image.
        workers: processes rendering and saving the images (each image has its own seeded generator, so
            the bytes do not depend on it).

    Returns:
        Counts: {"<cat>/<split>/triplets", "<cat>/<split>/images", "images", "shared_val"}.
    """
    base = Path(root) / "fashionIQ_dataset"
    for sub in ("captions", "image_splits", "images"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    splits = plan(spec, seed)
    asins = _Asins(rng_for(seed, "fashioniq", "asins"))
    asin_of: dict[int, str] = {}
    listed: dict[int, list[str]] = {}
    split_of: dict[int, str] = {}
    garments: dict[int, Garment] = {}
    counts: dict[str, int] = {}
    for (cat, split), sp in splits.items():
        for g in sp.gallery:
            if g.product_id not in asin_of:
                asin_of[g.product_id] = asins.new()
                garments[g.product_id] = g
                split_of[g.product_id] = split
            listed.setdefault(g.product_id, []).append(cat)
        names = list(dict.fromkeys(asin_of[g.product_id] for g in sp.gallery))
        write_json(base / "image_splits" / f"split.{cat}.{split}.json", names)
        if split != "test":  # Fashion-IQ-cap (DATASETS.md 2.6): UniFashion's LLaVA captions of the images
            seen = dict.fromkeys(g.product_id for g in sp.gallery)
            write_json(base / CAPTIONS_FILE.format(split=split, cat=cat),
                       [{"image": asin_of[pid], "caption": detailed(garments[pid]), "text_guidance": ""}
                        for pid in seen])
        rng = rng_for(seed, "fashioniq", cat, split, "quirks")
        items = []
        for ref, tgt, caps in sp.triplets:
            item = {"candidate": asin_of[ref.product_id]}
            if split != "test":
                item["target"] = asin_of[tgt.product_id]
            item["captions"] = list(caps)
            items.append(item)
        _apply_quirks(items, rng, spec.quirk_rates, allow_empty=split != "test")
        write_json(base / "captions" / f"cap.{cat}.{split}.json", items)
        counts[f"{cat}/{split}/triplets"] = len(items)
        counts[f"{cat}/{split}/images"] = len(names)
    records = []
    jobs = [(garments[pid], seed, pid, tuple(spec.size), base / f"images/{asin}.png") for pid, asin in asin_of.items()]
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        written = pool.imap(_write_image, jobs, chunksize=8) if pool else map(_write_image, jobs)
        for (pid, asin), _ in zip(asin_of.items(), written):
            records.append(record("fashioniq", split_of[pid], f"images/{asin}.png", garments[pid], 0, asin=asin,
                                  categories=list(dict.fromkeys(listed[pid]))))
            if progress:
                progress(1)
    finally:
        if pool:
            pool.close()
            pool.join()
    write_jsonl(base / SIDECAR, records)
    counts["images"] = len(records)
    counts["shared_val"] = sum(1 for r in records if len(r["categories"]) > 1)
    return counts
