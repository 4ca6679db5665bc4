"""Does a generated garment follow its condition? Colour, garment type and sleeve on the synthetic benchmark.

The synthetic renderer (data/synthetic/render.py) knows every product's geometry, so the checks need
no learned classifier (which would share the generator's blind spots):

- colour: the dominant palette colour (`protocol.dominant_colour`) inside the product's *garment
  region*, its canonical product-shot silhouette at the image size eroded by `erode` pixels (the
  per-view jitter of the real shots moves a silhouette by up to ~4 % of the side, so the eroded region
  stays on the fabric). Only solid-colour products count: a striped or checked garment has no single
  colour (half of a check is the secondary colour).
- garment type (dress / top / jacket / skirt / pants) and sleeve length (sleeveless / short / long):
  the image's foreground (pixels that differ from the border's median colour) is matched to the
  canonical silhouettes of every sub-category x sleeve x length x fit (`shape_templates`) by IoU;
  the best template's kind and sleeve are the prediction. White products are left out of these two
  checks: on the light-grey background their foreground cannot be segmented.

The same functions on the real images give the ceiling of each check (what a perfect generator would
score under the jitter, lighting and the 64-px resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch import Tensor

from unifashion.data.synthetic.attributes import COLOURS, FITS, SUBCATEGORIES, Garment
from unifashion.data.synthetic.render import Frame, Pose, edges, garment_mask, garment_shapes
from unifashion.tasks.fig.protocol import _as_rgb_array, dominant_colour, foreground_mask

BACKGROUND_LEVEL = 240.0
"""Typical background grey of the synthetic product shots (tint 228-250, x lighting 0.88-1.1)."""
SEGMENTABLE_DISTANCE = 60.0
"""A primary colour within this max-channel distance of the background (white) is not segmentable."""


def segmentable(garment: Garment) -> bool:
    """Whether the garment's primary colour stands out from the light-grey background (not white)."""
    rgb = np.asarray(COLOURS[garment.primary_colour], dtype=np.float64)
    return float(np.abs(rgb - BACKGROUND_LEVEL).max()) > SEGMENTABLE_DISTANCE


def canonical_mask(garment: Garment, size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) fabric mask of the garment's canonical product shot (no view jitter) at `size`."""
    height, width = size
    frame = Frame.product(garment.kind, height, width)
    return garment_mask(garment_shapes(garment, Pose()), frame, height, width)


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` eroded `pixels` times by its 4-neighbour border (never empty: stops one step early)."""
    out = mask.copy()
    for _ in range(pixels):
        inner = out & ~edges(out)
        if not inner.any():
            break
        out = inner
    return out


def garment_region(garment: Garment, size: tuple[int, int], erode_px: int | None = None) -> np.ndarray:
    """The pixels the colour check reads: the canonical silhouette eroded by `erode_px` (default 5 % of
    the shorter side, 3 px at 64 px)."""
    px = max(1, round(0.05 * min(size))) if erode_px is None else erode_px
    return erode(canonical_mask(garment, size), px)


@dataclass(frozen=True)
class ShapeTemplate:
    """One canonical silhouette of the garment-type / sleeve check."""

    subcategory: str
    """Sub-category name (e.g. "A-LINE DRESSES")."""
    kind: str
    """Silhouette family (dress, top, jacket, skirt, pants)."""
    sleeve_length: str | None
    """Sleeve length, None for skirts and pants."""
    mask: np.ndarray
    """Boolean (H, W) silhouette."""


@lru_cache(maxsize=8)
def shape_templates(size: tuple[int, int]) -> tuple[ShapeTemplate, ...]:
    """Canonical silhouettes of every sub-category x sleeve x length x fit (first neckline) at `size`."""
    out = []
    for sub in SUBCATEGORIES:
        for sleeve in sub.sleeves or (None,):
            for length in sub.lengths:
                for fit in FITS:
                    g = Garment(0, sub.category, sub.name, sub.kind, "black", None, "solid", sleeve, length,
                                sub.necklines[0] if sub.necklines else None, fit)
                    out.append(ShapeTemplate(sub.name, sub.kind, sleeve, canonical_mask(g, size)))
    return tuple(out)


def predict_shape(img, size: tuple[int, int] | None = None, tolerance: float = 30.0) -> ShapeTemplate | None:
    """The template whose silhouette best overlaps (IoU) the image's foreground; None if no foreground.

    Args:
        img: PIL image, (H, W, 3) array or (3, H, W) float tensor in [0, 1].
        size: the template size (default: the image's).
        tolerance: background tolerance of `protocol.foreground_mask` (0-255 units).
    """
    rgb = _as_rgb_array(img)
    fg = foreground_mask(rgb, tolerance)  # (H, W)
    if not fg.any():
        return None
    templates = shape_templates(tuple(size or fg.shape))
    masks = np.stack([t.mask for t in templates])  # (T, H, W)
    if masks.shape[1:] != fg.shape:
        raise ValueError(f"templates are {masks.shape[1:]} but the image is {fg.shape}")
    inter = (masks & fg).reshape(len(templates), -1).sum(1)  # (T,)
    union = (masks | fg).reshape(len(templates), -1).sum(1)  # (T,)
    return templates[int(np.argmax(inter / np.maximum(union, 1)))]


def garment_controllability(images: Tensor | Sequence, garments: Sequence[Garment],
                            erode_px: int | None = None) -> dict[str, float]:
    """Colour, garment-type and sleeve accuracy (percent) of images against the requested garments.

    Args:
        images: float (B, 3, H, W) in [0, 1], or a sequence of images (see `protocol.dominant_colour`).
        garments: the requested product of each image.
        erode_px: erosion of the colour region (default: `garment_region`'s).

    Returns:
        ``colour_acc`` (solid products), ``garment_acc`` and ``sleeve_acc`` (non-white products; sleeve:
        those with sleeves), and the counts ``n_colour``, ``n_garment``, ``n_sleeve``. An accuracy whose
        count is 0 is NaN.
    """
    if len(images) != len(garments):
        raise ValueError(f"{len(images)} images but {len(garments)} garments")
    colour_hits = garment_hits = sleeve_hits = 0
    n_colour = n_garment = n_sleeve = 0
    for img, g in zip(images, garments):
        rgb = _as_rgb_array(img)
        size = rgb.shape[:2]
        if g.pattern == "solid":
            n_colour += 1
            colour_hits += dominant_colour(rgb, COLOURS, mask=garment_region(g, size, erode_px)) == g.primary_colour
        if segmentable(g):
            pred = predict_shape(rgb, size)
            n_garment += 1
            garment_hits += pred is not None and pred.kind == g.kind
            if g.sleeve_length is not None:
                n_sleeve += 1
                sleeve_hits += pred is not None and pred.sleeve_length == g.sleeve_length

    def pct(hits: int, n: int) -> float:
        return 100.0 * hits / n if n else float("nan")

    return {"colour_acc": pct(colour_hits, n_colour), "garment_acc": pct(garment_hits, n_garment),
            "sleeve_acc": pct(sleeve_hits, n_sleeve), "n_colour": float(n_colour),
            "n_garment": float(n_garment), "n_sleeve": float(n_sleeve)}
