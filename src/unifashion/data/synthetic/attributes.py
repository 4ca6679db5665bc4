"""Garment attributes of the synthetic fashion benchmark, drawn with a seeded numpy Generator.

A :class:`Garment` is one product: a sub-category (which fixes the category, the silhouette kind
and the allowed attribute values) plus primary colour, pattern, secondary (pattern) colour,
sleeve length, garment length, neckline and fit. Every attribute is visible in the rendered
image (see ``render.py``) and named in the captions (see ``captions.py``), so retrieving one
product among 100 of the same sub-category needs the model to see colour, pattern, sleeves,
length, neckline and fit together: a sub-category holds thousands to ~10^5 combinations
(:func:`n_combinations`).

Conventions:
- colour names are single words (captions stay word-aligned for Fashion200K one-word queries);
- ``secondary_colour`` is ``None`` exactly when ``pattern == "solid"``;
- ``sleeve_length`` / ``neckline`` are ``None`` for kinds that have none (skirts, pants).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (242, 242, 238),
    "grey": (130, 130, 136),
    "navy": (30, 40, 92),
    "blue": (52, 112, 204),
    "red": (204, 36, 42),
    "burgundy": (112, 22, 44),
    "pink": (238, 142, 172),
    "green": (40, 142, 72),
    "olive": (112, 118, 44),
    "yellow": (242, 204, 42),
    "beige": (216, 196, 160),
    "brown": (112, 72, 40),
    "orange": (238, 122, 30),
    "purple": (112, 60, 152),
}
"""Named colours (single words) and their sRGB values."""

PATTERNS = ("solid", "vertical stripes", "horizontal stripes", "checks", "polka dots", "colour block")
"""Patterns; every pattern but ``solid`` is drawn in the secondary colour."""

FITS = ("slim", "regular", "loose")
"""Fits (silhouette width)."""

SLEEVES = ("sleeveless", "short", "long")
"""All sleeve lengths (a sub-category allows a subset)."""

MIN_COLOUR_DISTANCE = 90.0
"""Primary/secondary pairs closer than this in RGB are never drawn (pattern must stay visible)."""

KINDS = ("dress", "top", "jacket", "skirt", "pants")
"""Silhouette families drawn by the renderer."""


@dataclass(frozen=True)
class SubCategory:
    """A FashionGen-style sub-category and the attribute values it allows.

    Attributes:
        name: upper-case sub-category name as written to ``input_subcategory``.
        category: upper-case category name as written to ``input_category``.
        kind: silhouette family, one of :data:`KINDS`.
        noun: lower-case noun used in captions (e.g. "a-line dress").
        sleeves: allowed sleeve lengths (empty for skirts/pants).
        lengths: allowed garment lengths, shortest first (drawn hem positions, see render.py).
        necklines: allowed necklines (empty for skirts/pants).
        fiq_category: Fashion-IQ category ("dress", "shirt", "toptee") or None if not in Fashion-IQ.
        f200k: Fashion200K (label stem, category folder, sub-category folder).
    """

    name: str
    category: str
    kind: str
    noun: str
    sleeves: tuple[str, ...]
    lengths: tuple[str, ...]
    necklines: tuple[str, ...]
    fiq_category: str | None
    f200k: tuple[str, str, str]


_DRESS_NECK = ("crew neck", "v-neck", "scoop neck", "square neck")
SUBCATEGORIES: tuple[SubCategory, ...] = (
    SubCategory("A-LINE DRESSES", "DRESSES", "dress", "a-line dress", SLEEVES,
                ("mini", "knee-length", "midi", "maxi"), _DRESS_NECK, "dress",
                ("dress", "dresses", "a-line_dresses")),
    SubCategory("T-SHIRTS", "TOPS", "top", "t-shirt", ("short", "long"),
                ("cropped", "regular-length", "tunic-length"), ("crew neck", "v-neck", "scoop neck"), "toptee",
                ("top", "tops", "t-shirts")),
    SubCategory("SHIRTS", "TOPS", "top", "shirt", ("short", "long"),
                ("cropped", "regular-length", "tunic-length"), ("point collar", "band collar"), "shirt",
                ("top", "tops", "shirts")),
    SubCategory("JACKETS", "JACKETS & COATS", "jacket", "jacket", ("long",),
                ("cropped", "hip-length", "mid-thigh"), ("notch lapel", "collarless", "stand collar"), None,
                ("jacket", "jackets", "jackets")),
    SubCategory("TROUSERS", "PANTS", "pants", "trousers", (),
                ("cropped", "ankle-length", "full-length"), (), None,
                ("pants", "pants", "trousers")),
    SubCategory("PENCIL SKIRTS", "SKIRTS", "skirt", "pencil skirt", (),
                ("mini", "knee-length", "midi"), (), None,
                ("skirt", "skirts", "pencil_skirts")),
    SubCategory("SHEATH DRESSES", "DRESSES", "dress", "sheath dress", SLEEVES,
                ("mini", "knee-length", "midi", "maxi"), _DRESS_NECK, "dress",
                ("dress", "dresses", "sheath_dresses")),
    SubCategory("TANK TOPS", "TOPS", "top", "tank top", ("sleeveless",),
                ("cropped", "regular-length", "tunic-length"), ("crew neck", "v-neck", "scoop neck", "square neck"),
                "toptee", ("top", "tops", "tank_tops")),
    SubCategory("SWEATERS", "SWEATERS", "top", "sweater", ("short", "long"),
                ("cropped", "regular-length", "tunic-length"), ("crew neck", "v-neck", "turtleneck"), "toptee",
                ("top", "tops", "sweaters")),
    SubCategory("COATS", "JACKETS & COATS", "jacket", "coat", ("long",),
                ("hip-length", "mid-thigh", "knee-length"), ("notch lapel", "collarless", "stand collar"), None,
                ("jacket", "jackets", "coats")),
    SubCategory("SHORTS", "PANTS", "pants", "shorts", (),
                ("short", "mid-thigh", "bermuda"), (), None,
                ("pants", "pants", "shorts")),
    SubCategory("A-LINE SKIRTS", "SKIRTS", "skirt", "a-line skirt", (),
                ("mini", "knee-length", "midi", "maxi"), (), None,
                ("skirt", "skirts", "a-line_skirts")),
    SubCategory("SHIFT DRESSES", "DRESSES", "dress", "shift dress", SLEEVES,
                ("mini", "knee-length", "midi"), _DRESS_NECK, "dress",
                ("dress", "dresses", "shift_dresses")),
    SubCategory("BLOUSES", "TOPS", "top", "blouse", ("sleeveless", "short", "long"),
                ("cropped", "regular-length", "tunic-length"), ("v-neck", "scoop neck", "band collar"), "shirt",
                ("top", "tops", "blouses")),
)
"""Every sub-category, in a fixed order (scales take the first k or name them)."""

SUBCATEGORY_BY_NAME: dict[str, SubCategory] = {s.name: s for s in SUBCATEGORIES}


@dataclass(frozen=True)
class Garment:
    """One synthetic product.

    Attributes:
        product_id: integer product id (unique within a written dataset).
        category: upper-case category (e.g. "DRESSES").
        subcategory: upper-case sub-category (e.g. "A-LINE DRESSES"), a key of SUBCATEGORY_BY_NAME.
        kind: silhouette family (dress, top, jacket, skirt, pants).
        primary_colour: main fabric colour, a key of COLOURS.
        secondary_colour: pattern colour (None for solid).
        pattern: one of PATTERNS.
        sleeve_length: one of SLEEVES, or None for skirts/pants.
        length: garment length, one of the sub-category's lengths.
        neckline: one of the sub-category's necklines, or None for skirts/pants.
        fit: one of FITS.
    """

    product_id: int
    category: str
    subcategory: str
    kind: str
    primary_colour: str
    secondary_colour: str | None
    pattern: str
    sleeve_length: str | None
    length: str
    neckline: str | None
    fit: str

    @property
    def sub(self) -> SubCategory:
        """The garment's SubCategory."""
        return SUBCATEGORY_BY_NAME[self.subcategory]

    def attributes(self) -> dict[str, str | None]:
        """The visual attributes (everything but the product id) as a dict."""
        d = dataclasses.asdict(self)
        d.pop("product_id")
        return d

    def combination(self) -> tuple:
        """A hashable key of the visual attributes (distinct products may share it)."""
        return tuple(self.attributes().values())


VISUAL_ATTRIBUTES = ("primary_colour", "pattern", "sleeve_length", "length", "neckline", "fit")
"""Attributes that a Fashion-IQ style modification may change (secondary colour follows pattern)."""


def _colour_distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(COLOURS[a], COLOURS[b], dtype=float)))


def secondary_options(primary: str) -> list[str]:
    """Colours allowed as the secondary (pattern) colour of `primary`, in COLOURS order."""
    return [c for c in COLOURS if c != primary and _colour_distance(c, primary) >= MIN_COLOUR_DISTANCE]


def _choice(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def sample_garment(rng: np.random.Generator, product_id: int, subcategory: SubCategory | str) -> Garment:
    """Draw one garment of a sub-category, every allowed attribute value uniformly.

    Args:
        rng: the seeded generator (consumed in a fixed order: reproducible).
        product_id: id stored in the garment.
        subcategory: a SubCategory or its name.

    Returns:
        The Garment.
    """
    sub = SUBCATEGORY_BY_NAME[subcategory] if isinstance(subcategory, str) else subcategory
    primary = _choice(rng, list(COLOURS))
    pattern = _choice(rng, PATTERNS)
    secondary = _choice(rng, secondary_options(primary)) if pattern != "solid" else None
    sleeve = _choice(rng, sub.sleeves) if sub.sleeves else None
    length = _choice(rng, sub.lengths)
    neckline = _choice(rng, sub.necklines) if sub.necklines else None
    fit = _choice(rng, FITS)
    return Garment(product_id, sub.category, sub.name, sub.kind, primary, secondary, pattern, sleeve, length,
                   neckline, fit)


def options(garment: Garment, attribute: str) -> tuple[str, ...]:
    """The values `attribute` may take for the garment's sub-category (empty if not applicable)."""
    sub = garment.sub
    table = {
        "primary_colour": tuple(COLOURS),
        "pattern": PATTERNS,
        "sleeve_length": sub.sleeves,
        "length": sub.lengths,
        "neckline": sub.necklines,
        "fit": FITS,
    }
    if attribute not in table:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {sorted(table)}")
    return table[attribute]


def changeable(garment: Garment) -> list[str]:
    """Visual attributes with at least one other allowed value for this garment."""
    return [a for a in VISUAL_ATTRIBUTES if len(options(garment, a)) > 1]


def vary(garment: Garment, rng: np.random.Generator, attributes: list[str], product_id: int) -> Garment:
    """A new product that differs from `garment` exactly in `attributes` (each set to another value).

    Changing the primary colour keeps the secondary colour when it still contrasts, else redraws
    it; changing the pattern to a non-solid one draws a secondary colour if there was none.

    Args:
        garment: the source product.
        rng: the seeded generator.
        attributes: names from VISUAL_ATTRIBUTES, each changeable for this garment.
        product_id: id of the new product.

    Returns:
        The new Garment.
    """
    changes: dict[str, str | None] = {"product_id": product_id}
    for attr in attributes:
        others = [v for v in options(garment, attr) if v != getattr(garment, attr)]
        if not others:
            raise ValueError(f"attribute {attr!r} of {garment.subcategory} has a single value; cannot vary it")
        changes[attr] = _choice(rng, others)
    new = dataclasses.replace(garment, **changes)
    if new.pattern == "solid":
        new = dataclasses.replace(new, secondary_colour=None)
    elif new.secondary_colour is None or new.secondary_colour not in secondary_options(new.primary_colour):
        new = dataclasses.replace(new, secondary_colour=_choice(rng, secondary_options(new.primary_colour)))
    return new


def attribute_diff(a: Garment, b: Garment) -> list[str]:
    """Names of the visual attributes (plus secondary_colour) in which `a` and `b` differ."""
    names = [*VISUAL_ATTRIBUTES, "secondary_colour"]
    return [n for n in names if getattr(a, n) != getattr(b, n)]


def n_combinations(subcategory: SubCategory | str) -> int:
    """Number of distinct attribute combinations a sub-category allows (exact count).

    colour pairs (solid: one per primary; patterned: allowed secondaries per primary) times
    sleeves x lengths x necklines x fits.
    """
    sub = SUBCATEGORY_BY_NAME[subcategory] if isinstance(subcategory, str) else subcategory
    n_patterned = len(PATTERNS) - 1
    colour_pattern = sum(1 + n_patterned * len(secondary_options(p)) for p in COLOURS)
    return (colour_pattern * max(1, len(sub.sleeves)) * len(sub.lengths) * max(1, len(sub.necklines))
            * len(FITS))
