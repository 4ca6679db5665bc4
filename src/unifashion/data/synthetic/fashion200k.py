"""Writer of synthetic Fashion200K in the official layout (DATASETS.md 3.1-3.3).

Writes under ``<root>/``:

- ``labels/{dress,jacket,pants,skirt,top}_{train,test}_detect_all.txt``: one line per image,
  ``<relative image path>\\t<detection score %.6f>\\t<description>``; the description is the
  product's short caption (repeated for each of its images);
- ``women/<dresses|jackets|pants|skirts|tops>/<sub>/<pid>/<pid>_<k>.jpeg`` (k = 0, 1, ...),
  RGB JPEGs of varying size (portrait crops);
- ``test_queries.txt``: ``<source path> <target path>`` per line (TIRG), both in the test labels,
  whose descriptions differ in exactly one word (same number of words);
- ``attributes.jsonl``: the sidecar (one line per image).

Products come in *families*: a base garment and variants that each change one captioned
attribute (colour, pattern, sleeve length or length), so one-word-different captions exist in
both splits (TIRG samples training triplets from them on the fly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unifashion.data.synthetic.attributes import SUBCATEGORIES, Garment, options, sample_garment, vary
from unifashion.data.synthetic.captions import short
from unifashion.data.synthetic.common import SIDECAR, Progress, record, rng_for, save_jpeg, write_jsonl
from unifashion.data.synthetic.render import render_views

SPLITS = ("train", "test")
STEMS = ("dress", "jacket", "pants", "skirt", "top")
CAPTIONED = ("primary_colour", "pattern", "sleeve_length", "length")
"""Attributes named by the short caption (a family varies one of them per member)."""


@dataclass(frozen=True)
class Fashion200KSpec:
    """What to write.

    Attributes:
        families: {split: families per label stem}.
        members: products per family (base + members - 1 one-word variants).
        images_per_product: (min, max) images per product, inclusive.
        height: (min, max) image height in pixels; width = 0.62-0.8 x height.
    """

    families: dict[str, int]
    members: int = 3
    images_per_product: tuple[int, int] = (1, 3)
    height: tuple[int, int] = (224, 288)


def one_word_diff(a: str, b: str) -> tuple[str, str] | None:
    """(word of a, word of b) if the captions have equal length and differ in exactly one word."""
    wa, wb = a.split(), b.split()
    if len(wa) != len(wb):
        return None
    diff = [(x, y) for x, y in zip(wa, wb) if x != y]
    return diff[0] if len(diff) == 1 else None


def _family(rng: np.random.Generator, base: Garment, members: int, next_id: int) -> list[Garment]:
    family = [base]
    captions = {short(base)}
    attrs = [a for a in CAPTIONED if len(options(base, a)) > 1]
    tries = 0
    while len(family) < members and tries < 20 * members:
        tries += 1
        attr = attrs[int(rng.integers(len(attrs)))]
        g = vary(base, rng, [attr], next_id + len(family))
        if short(g) not in captions:
            family.append(g)
            captions.add(short(g))
    return family


def plan(spec: Fashion200KSpec, seed: int, split: str) -> list[tuple[str, list[Garment]]]:
    """Families of one split as (label stem, products), in file order (no rendering)."""
    rng = rng_for(seed, "fashion200k", split, "plan")
    next_id = 50_000_000 if split == "train" else 80_000_000
    out = []
    for stem in STEMS:
        subs = [s for s in SUBCATEGORIES if s.f200k[0] == stem]
        for _ in range(spec.families[split]):
            base = sample_garment(rng, next_id, subs[int(rng.integers(len(subs)))])
            fam = _family(rng, base, spec.members, next_id)
            next_id += spec.members + 1
            out.append((stem, fam))
    return out


def _n_views(spec: Fashion200KSpec, seed: int, split: str, f_idx: int, member: int) -> tuple[np.random.Generator, int]:
    rng = rng_for(seed, "fashion200k", split, f_idx, member)
    return rng, int(rng.integers(spec.images_per_product[0], spec.images_per_product[1] + 1))


def n_images(spec: Fashion200KSpec, seed: int) -> int:
    """Number of images both splits will hold."""
    return sum(_n_views(spec, seed, split, f, m)[1] for split in SPLITS
               for f, (_, fam) in enumerate(plan(spec, seed, split)) for m in range(len(fam)))


def image_path(g: Garment, k: int) -> str:
    """Relative path of image k of a product."""
    _, folder, sub = g.sub.f200k
    return f"women/{folder}/{sub}/{g.product_id}/{g.product_id}_{k}.jpeg"


def write_fashion200k(root: Path, spec: Fashion200KSpec, seed: int = 0, progress: Progress | None = None) -> dict:
    """Write labels, images, test queries and the sidecar under `root`.

    Args:
        root: the Fashion200K dataset root (created).
        spec: sizes.
        seed: generation seed.
        progress: called with the number of images written after each product.

    Returns:
        Counts: {"<split>/images", "<split>/products", "<split>/<stem>" (images), "test/queries"}.
    """
    root = Path(root)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    counts: dict[str, int] = {}
    queries: list[str] = []
    for split in SPLITS:
        lines: dict[str, list[str]] = {stem: [] for stem in STEMS}
        families = plan(spec, seed, split)
        n_products = 0
        for f_idx, (stem, family) in enumerate(families):
            first_images: list[list[str]] = []
            for m, g in enumerate(family):
                rng, n = _n_views(spec, seed, split, f_idx, m)
                h = int(rng.integers(spec.height[0], spec.height[1] + 1))
                w = int(round(h * rng.uniform(0.62, 0.8)))
                paths = []
                for k, img in enumerate(render_views(g, rng, n, (h, w))):
                    path = image_path(g, k)
                    save_jpeg(img, root / path)
                    score = float(rng.uniform(-3.0, 1.0))
                    lines[stem].append(f"{path}\t{score:.6f}\t{short(g)}\n")
                    records.append(record("fashion200k", split, path, g, k))
                    paths.append(path)
                first_images.append(paths)
                n_products += 1
                if progress:
                    progress(n)
            if split == "test":
                qrng = rng_for(seed, "fashion200k", "queries", f_idx)
                for a, ga in enumerate(family):
                    for b, gb in enumerate(family):
                        if a != b and one_word_diff(short(ga), short(gb)):
                            src = first_images[a][int(qrng.integers(len(first_images[a])))]
                            tgt = first_images[b][int(qrng.integers(len(first_images[b])))]
                            queries.append(f"{src} {tgt}\n")
        for stem in STEMS:
            (root / "labels" / f"{stem}_{split}_detect_all.txt").write_text("".join(lines[stem]), encoding="utf-8")
            counts[f"{split}/{stem}"] = len(lines[stem])
        counts[f"{split}/images"] = sum(len(v) for v in lines.values())
        counts[f"{split}/products"] = n_products
    (root / "test_queries.txt").write_text("".join(queries), encoding="utf-8")
    counts["test/queries"] = len(queries)
    write_jsonl(root / SIDECAR, records)
    return counts
