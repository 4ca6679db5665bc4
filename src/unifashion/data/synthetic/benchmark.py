"""The synthetic fashion benchmark: every dataset written in its official layout.

``write_benchmark(out, seed, scale)`` writes ``out/fashiongen``, ``out/fashion200k``,
``out/fashioniq`` (holding ``fashionIQ_dataset/``) and ``out/vitonhd``, each with its attribute
sidecar, and returns a printable :class:`Summary`. Same seed and scale -> byte-identical files.

Scales (:data:`SCALES`): ``tiny`` for tests (seconds), ``small`` for the demo (every FashionGen
validation sub-category holds more than 100 products, so the sample-100 protocol draws its
negatives from the query's own sub-category), ``medium`` for benchmarks (about 4x small).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from unifashion.data.synthetic import fashion200k, fashiongen, fashioniq, vitonhd
from unifashion.data.synthetic.attributes import SUBCATEGORIES, n_combinations
from unifashion.data.synthetic.common import SIDECAR, read_jsonl

Scale = Literal["tiny", "small", "medium"]
DATASET_NAMES = ("fashiongen", "fashion200k", "fashioniq", "vitonhd")


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of every dataset at one scale.

    Attributes:
        fashiongen: FashionGen products/views.
        fashion200k: Fashion200K families.
        fashioniq: Fashion-IQ triplets.
        vitonhd: VITON-HD persons.
    """

    fashiongen: fashiongen.FashionGenSpec
    fashion200k: fashion200k.Fashion200KSpec
    fashioniq: fashioniq.FashionIQSpec
    vitonhd: vitonhd.VitonHDSpec


_SMALL_SUBS = ("A-LINE DRESSES", "T-SHIRTS", "SHIRTS", "JACKETS", "TROUSERS", "PENCIL SKIRTS")
SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec(
        fashiongen.FashionGenSpec(_SMALL_SUBS[:4], train_per_subcategory=4, validation_per_subcategory=5,
                                  singleton_subcategory="COATS"),
        fashion200k.Fashion200KSpec({"train": 1, "test": 1}, members=3, images_per_product=(1, 2)),
        fashioniq.FashionIQSpec({"train": 4, "val": 4, "test": 3}, shared_val=2),
        vitonhd.VitonHDSpec(train=3, test=3),
    ),
    "small": ScaleSpec(
        fashiongen.FashionGenSpec(_SMALL_SUBS, train_per_subcategory=300, validation_per_subcategory=120),
        fashion200k.Fashion200KSpec({"train": 60, "test": 20}),
        fashioniq.FashionIQSpec({"train": 800, "val": 80, "test": 40}, shared_val=8),
        vitonhd.VitonHDSpec(train=160, test=40),
    ),
    "medium": ScaleSpec(
        fashiongen.FashionGenSpec(tuple(s.name for s in SUBCATEGORIES[:12]), train_per_subcategory=600,
                                  validation_per_subcategory=240),
        fashion200k.Fashion200KSpec({"train": 240, "test": 80}),
        fashioniq.FashionIQSpec({"train": 800, "val": 320, "test": 160}, shared_val=30),
        vitonhd.VitonHDSpec(train=640, test=160),
    ),
}
"""Sizes per scale."""


@dataclass
class Summary:
    """What `write_benchmark` wrote.

    Attributes:
        out: output directory.
        seed: generation seed.
        scale: scale name.
        counts: {dataset: {"<split>/<what>": count}} (images, products, per-category counts, ...).
        combinations: distinct attribute combinations allowed per sub-category (drawn datasets'
            sub-categories) and "overall" (their sum).
        observed: distinct attribute combinations actually written per dataset (from the sidecars).
        bytes: disk size per dataset.
        seconds: wall time per dataset.
    """

    out: Path
    seed: int
    scale: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    combinations: dict[str, int] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"synthetic fashion benchmark: scale={self.scale} seed={self.seed} out={self.out}"]
        for ds, counts in self.counts.items():
            lines.append(f"  {ds}: {self.bytes.get(ds, 0) / 1e6:.1f} MB in {self.seconds.get(ds, 0):.1f} s, "
                         f"{self.observed.get(ds, 0)} distinct attribute combinations written")
            for key, value in counts.items():
                lines.append(f"    {key:<40s} {value:>8d}")
        lines.append("  attribute combinations allowed per sub-category:")
        for key, value in self.combinations.items():
            lines.append(f"    {key:<40s} {value:>8d}")
        total_b, total_s = sum(self.bytes.values()), sum(self.seconds.values())
        lines.append(f"  total: {total_b / 1e6:.1f} MB in {total_s:.1f} s")
        return "\n".join(lines)


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _n_images(spec: ScaleSpec, name: str, seed: int) -> int:
    if name == "fashiongen":
        return fashiongen.n_images(spec.fashiongen, seed)
    if name == "fashion200k":
        return fashion200k.n_images(spec.fashion200k, seed)
    if name == "fashioniq":
        return len({g.product_id for sp in fashioniq.plan(spec.fashioniq, seed).values() for g in sp.gallery})
    return spec.vitonhd.train + spec.vitonhd.test


def write_benchmark(out: Path, seed: int = 0, scale: Scale = "small",
                    datasets: Iterable[str] = DATASET_NAMES, progress: bool = True, workers: int = 2) -> Summary:
    """Write the synthetic benchmark.

    Args:
        out: output directory; dataset roots are ``out/<dataset>`` (Fashion-IQ:
            ``out/fashioniq/fashionIQ_dataset``).
        seed: generation seed (same seed and scale -> byte-identical files).
        scale: "tiny", "small" or "medium" (see SCALES).
        datasets: which of "fashiongen", "fashion200k", "fashioniq", "vitonhd" to write.
        progress: show a tqdm progress bar (images, or persons for VITON-HD).
        workers: processes rendering FashionGen and Fashion-IQ (the bulk); the output bytes do not depend on it.

    Returns:
        The Summary (print it).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    datasets = tuple(datasets)
    unknown = [d for d in datasets if d not in DATASET_NAMES]
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; expected a subset of {DATASET_NAMES}")
    spec = SCALES[scale]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(out=out, seed=seed, scale=scale)
    total = sum(_n_images(spec, d, seed) for d in datasets)
    writers = {
        "fashiongen": lambda root, cb: fashiongen.write_fashiongen(root, spec.fashiongen, seed, cb, workers),
        "fashion200k": lambda root, cb: fashion200k.write_fashion200k(root, spec.fashion200k, seed, cb),
        "fashioniq": lambda root, cb: fashioniq.write_fashioniq(root, spec.fashioniq, seed, cb, workers),
        "vitonhd": lambda root, cb: vitonhd.write_vitonhd(root, spec.vitonhd, seed, cb),
    }
    subcats: set[str] = set()
    with tqdm(total=total, desc=f"synthetic {scale}", unit="img", disable=not progress) as bar:
        for name in datasets:
            root = out / name
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            summary.counts[name] = writers[name](root, bar.update)
            summary.seconds[name] = time.perf_counter() - t0
            summary.bytes[name] = _disk(root)
            sidecar = next(root.rglob(SIDECAR))
            recs = read_jsonl(sidecar)
            summary.observed[name] = len({tuple(r["garment"].values()) for r in recs})
            subcats |= {r["garment"]["subcategory"] for r in recs}
    for s in SUBCATEGORIES:
        if s.name in subcats:
            summary.combinations[s.name] = n_combinations(s)
    summary.combinations["overall"] = sum(summary.combinations.values())
    return summary
