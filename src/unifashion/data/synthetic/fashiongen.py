"""Writer of synthetic FashionGen in the official HDF5 layout (DATASETS.md 1.1-1.2).

Writes ``<root>/fashiongen_256_256_train.h5`` and ``<root>/fashiongen_256_256_validation.h5``:
every key of DATASETS.md 1.2 as a top-level dataset; text keys fixed-length ``S`` byte strings
of shape (N, 1) encoded latin-1 (brands and product names carry non-ASCII latin-1 letters such
as "é"); ``input_productID`` / ``index`` int64 (N, 1); ``index_2`` int64 (N,) (the product's
ordinal in the file; the official meaning is unverified); ``input_msrpUSD`` float32 (N, 1);
``input_image`` uint8 (N, 256, 256, 3) RGB, gzip-compressed one chunk per image. Rows of one
product (2-4 views) are contiguous; products are shuffled across sub-categories.
``input_description`` is the professional caption; ``<root>/attributes.jsonl`` is the sidecar.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from unifashion.data.synthetic.attributes import Garment, sample_garment
from unifashion.data.synthetic.captions import professional
from unifashion.data.synthetic.common import SIDECAR, Progress, record, rng_for, write_jsonl
from unifashion.data.synthetic.render import render_views

SPLITS = ("train", "validation")
TEXT_KEYS = ("input_description", "input_concat_description", "input_name", "input_category",
             "input_subcategory", "input_pose", "input_brand", "input_composition", "input_department",
             "input_gender", "input_season")
"""Text keys written as fixed-length latin-1 byte strings of shape (N, 1)."""

BRANDS = ("Maison Élodie", "Atelier Renée", "Garçon Rouge", "Noël & Fils", "Studio Bråten", "Hélène Paris",
          "North Row", "Kinfolk Supply", "Lumen Works", "Café Society", "Ortiz Núñez", "Grey Harbour")
MATERIALS = {
    "dress": ("crêpe", "jersey", "satin", "poplin"),
    "top": ("jersey", "piqué", "poplin", "cotton"),
    "jacket": ("bouclé", "twill", "wool", "denim"),
    "skirt": ("crêpe", "denim", "twill", "lamé"),
    "pants": ("twill", "denim", "wool", "cotton"),
}
COMPOSITION = {"crêpe": "100% polyester", "jersey": "95% cotton, 5% elastane", "satin": "100% silk",
               "poplin": "100% cotton", "piqué": "100% cotton", "cotton": "100% cotton",
               "bouclé": "70% wool, 30% polyamide", "twill": "98% cotton, 2% elastane", "wool": "100% virgin wool",
               "denim": "100% cotton", "lamé": "80% viscose, 20% metallised fibres"}
SEASONS = ("SS17", "FW17", "SS18", "FW18")


@dataclass(frozen=True)
class FashionGenSpec:
    """What to write.

    Attributes:
        subcategories: sub-category names drawn in both splits.
        train_per_subcategory: products per sub-category in the train file.
        validation_per_subcategory: products per sub-category in the validation file.
        singleton_subcategory: an extra sub-category with exactly one validation product (exercises
            the sample-100 fallback to other sub-categories), or None.
        views: (min, max) views (rows) per product, inclusive.
        image_size: side of the square images (the official files are 256).
        compression: h5py compression of ``input_image`` ("gzip" (level 1), "lzf" or None).
    """

    subcategories: tuple[str, ...]
    train_per_subcategory: int
    validation_per_subcategory: int
    singleton_subcategory: str | None = None
    views: tuple[int, int] = (2, 4)
    image_size: int = 256
    compression: str | None = "gzip"


@dataclass
class _Product:
    garment: Garment
    n_views: int
    brand: str
    material: str
    season: str
    msrp: float


def plan(spec: FashionGenSpec, seed: int, split: str) -> list[_Product]:
    """Draw the products of one split (cheap: no rendering), in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = rng_for(seed, "fashiongen", split, "plan")
    n = spec.train_per_subcategory if split == "train" else spec.validation_per_subcategory
    subs = [s for s in spec.subcategories for _ in range(n)]
    if split == "validation" and spec.singleton_subcategory:
        subs.append(spec.singleton_subcategory)
    subs = [subs[int(i)] for i in rng.permutation(len(subs))]
    base = 100_000 if split == "train" else 700_000
    products = []
    for i, sub in enumerate(subs):
        g = sample_garment(rng, base + i, sub)
        products.append(_Product(
            garment=g,
            n_views=int(rng.integers(spec.views[0], spec.views[1] + 1)),
            brand=BRANDS[int(rng.integers(len(BRANDS)))],
            material=MATERIALS[g.kind][int(rng.integers(len(MATERIALS[g.kind])))],
            season=SEASONS[int(rng.integers(len(SEASONS)))],
            msrp=float(np.round(np.exp(rng.normal(5.5, 0.6)) / 5) * 5),
        ))
    return products


def n_images(spec: FashionGenSpec, seed: int) -> int:
    """Number of rows both files will hold."""
    return sum(p.n_views for split in SPLITS for p in plan(spec, seed, split))


def _texts(p: _Product, view: int) -> dict[str, str]:
    g = p.garment
    desc = professional(g)
    return {
        "input_description": desc,
        "input_concat_description": f"{desc} {p.material.capitalize()}. {COMPOSITION[p.material]}. "
                                    f"Designed by {p.brand}.",
        "input_name": f"{g.primary_colour.capitalize()} {p.material.capitalize()} {g.sub.noun.title()}",
        "input_category": g.category,
        "input_subcategory": g.subcategory,
        "input_pose": f"id_gridfs_{view + 1}",
        "input_brand": p.brand,
        "input_composition": COMPOSITION[p.material],
        "input_department": "CLOTHING",
        "input_gender": "WOMEN",
        "input_season": p.season,
    }


def _fixed_bytes(values: list[str]) -> np.ndarray:
    encoded = [v.encode("latin-1") for v in values]
    width = max(1, max((len(b) for b in encoded), default=1))
    return np.array(encoded, dtype=f"S{width}").reshape(-1, 1)


def _render_product(args: tuple[Garment, int, int, str, int, int]) -> np.ndarray:
    g, n_views, seed, split, i, size = args
    views = render_views(g, rng_for(seed, "fashiongen", split, i), n_views, (size, size))
    return np.stack([np.asarray(v) for v in views])  # (n_views, S, S, 3)


def write_split(root: Path, spec: FashionGenSpec, seed: int, split: str, progress: Progress | None = None,
                workers: int = 1) -> list[dict]:
    """Write one HDF5 file; returns its sidecar records (one per row).

    Rendering runs in `workers` processes (each product has its own seeded generator, so the
    bytes do not depend on `workers`).
    """
    products = plan(spec, seed, split)
    n = sum(p.n_views for p in products)
    size = spec.image_size
    path = root / f"fashiongen_256_256_{split}.h5"
    rows: list[tuple[_Product, int]] = [(p, v) for p in products for v in range(p.n_views)]
    records = []
    with h5py.File(path, "w", track_order=False) as f:
        images = f.create_dataset("input_image", shape=(n, size, size, 3), dtype=np.uint8,
                                  chunks=(1, size, size, 3), compression=spec.compression,
                                  compression_opts=1 if spec.compression == "gzip" else None, track_times=False)
        texts = [_texts(p, v) for p, v in rows]
        for key in TEXT_KEYS:
            f.create_dataset(key, data=_fixed_bytes([t[key] for t in texts]), track_times=False)
        f.create_dataset("input_productID", data=np.array([p.garment.product_id for p, _ in rows],
                                                          dtype=np.int64).reshape(n, 1), track_times=False)
        f.create_dataset("input_msrpUSD", data=np.array([p.msrp for p, _ in rows], dtype=np.float32).reshape(n, 1),
                         track_times=False)
        f.create_dataset("index", data=np.arange(n, dtype=np.int64).reshape(n, 1), track_times=False)
        ordinal = np.repeat(np.arange(len(products), dtype=np.int64), [p.n_views for p in products])
        f.create_dataset("index_2", data=ordinal, track_times=False)
        row = 0
        buf: list[np.ndarray] = []
        jobs = [(p.garment, p.n_views, seed, split, i, size) for i, p in enumerate(products)]
        pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            rendered = pool.imap(_render_product, jobs, chunksize=4) if pool else map(_render_product, jobs)
            for i, (p, views) in enumerate(zip(products, rendered)):
                for v in range(p.n_views):
                    records.append(record("fashiongen", split, f"{path.name}#{row + len(buf)}", p.garment, v,
                                          row=row + len(buf)))
                    buf.append(views[v])
                if len(buf) >= 64 or i == len(products) - 1:
                    images[row:row + len(buf)] = np.stack(buf)  # (b, S, S, 3)
                    row += len(buf)
                    if progress:
                        progress(len(buf))
                    buf = []
        finally:
            if pool:
                pool.close()
                pool.join()
    return records


def write_fashiongen(root: Path, spec: FashionGenSpec, seed: int = 0, progress: Progress | None = None,
                     workers: int = 1) -> dict:
    """Write both HDF5 files and the sidecar under `root`.

    Args:
        root: the FashionGen dataset root (created).
        spec: sizes.
        seed: generation seed.
        progress: called with the number of rows written after each batch.
        workers: rendering processes (output bytes do not depend on it).

    Returns:
        Counts: {"<split>/images", "<split>/products", "<split>/<SUBCATEGORY>" (products)}.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    counts: dict[str, int] = {}
    for split in SPLITS:
        recs = write_split(root, spec, seed, split, progress, workers)
        records += recs
        products = plan(spec, seed, split)
        counts[f"{split}/images"] = len(recs)
        counts[f"{split}/products"] = len(products)
        for p in products:
            key = f"{split}/{p.garment.subcategory}"
            counts[key] = counts.get(key, 0) + 1
    write_jsonl(root / SIDECAR, records)
    return counts
