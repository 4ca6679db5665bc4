"""Procedural PIL/numpy renderer of synthetic garments.

Every garment is drawn in a shared *body space* (u right, v down; the figure's neck is at
v = 0.18, the waist at 0.45, the knees at 0.85) so that one geometry serves both flat product
shots (``render_garment``) and garments worn by a person (``person.py``). What the renderer makes
visible, attribute by attribute:

- sub-category: silhouette (A-line vs sheath vs shift skirt, shirt placket and collar, open
  jacket front with lapels, pants legs, pencil vs A-line skirt);
- sleeve length: no sleeve / short / long sleeve tubes from the shoulders;
- length: hem position (v), with a fixed body scale per kind, so longer garments reach lower;
- neckline: a cut (crew, v, scoop, square) or an added part (turtleneck, collars, lapels);
- fit: width multiplier of the body, sleeves and legs;
- primary colour fill and a numpy pattern mask in the secondary colour.

A product shot is drawn on a small square canvas (cheap), then one affine resample applies the
per-view jitter (shift, scale, rotation) and the upscaling to the output size; lighting and a
background tint vary per view, and the view index changes the pose (sleeve angle, leg spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from unifashion.data.synthetic.attributes import COLOURS, Garment

Point = tuple[float, float]

NECK_Y = 0.18
SHOULDER_Y = 0.205
SHOULDER_HALF = 0.15
ARMPIT_Y = 0.31
WAIST_Y = 0.45
HIP_Y = 0.55
CROTCH_Y = 0.62

FIT_WIDTH = {"slim": 0.84, "regular": 1.0, "loose": 1.22}
SLEEVE_LENGTH = {"sleeveless": 0.0, "short": 0.11, "long": 0.40}
HEM_Y: dict[str, dict[str, float]] = {
    "top": {"cropped": 0.40, "regular-length": 0.56, "tunic-length": 0.70},
    "jacket": {"cropped": 0.42, "hip-length": 0.58, "mid-thigh": 0.72, "knee-length": 0.88},
    "dress": {"mini": 0.68, "knee-length": 0.85, "midi": 1.0, "maxi": 1.15},
    "skirt": {"mini": 0.66, "knee-length": 0.85, "midi": 1.0, "maxi": 1.15},
    "pants": {"short": 0.68, "mid-thigh": 0.76, "bermuda": 0.86, "cropped": 0.98, "ankle-length": 1.09,
              "full-length": 1.18},
}
"""Hem position (body-space v) of every length name, per kind."""

PRODUCT_FRAME: dict[str, tuple[float, float, float]] = {
    "top": (0.5, 0.43, 0.41),
    "jacket": (0.5, 0.52, 0.43),
    "dress": (0.5, 0.66, 0.53),
    "skirt": (0.5, 0.80, 0.39),
    "pants": (0.5, 0.81, 0.40),
}
"""Square product-shot frame per kind: (centre u, centre v, half size) in body space."""


@dataclass(frozen=True)
class Pose:
    """Pose of a garment.

    Attributes:
        sleeve_angle: sleeve axis angle from the vertical, degrees (0 = hanging down).
        leg_spread: outward slope of the pants legs / flare sway (body units per unit of v).
    """

    sleeve_angle: float = 28.0
    leg_spread: float = 0.05


@dataclass(frozen=True)
class ViewJitter:
    """Per-view nuisance of a product shot.

    Attributes:
        pose: garment pose for this view.
        angle: in-plane rotation, degrees.
        scale: zoom factor (1 = frame fills the shorter image side).
        shift: (dx, dy) translation as fractions of the output width/height.
        brightness: global lighting multiplier.
        gradient: (gx, gy) lighting slope across the canvas (fraction per canvas width).
        background: background RGB colour.
    """

    pose: Pose = Pose()
    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    gradient: tuple[float, float] = (0.0, 0.0)
    background: tuple[int, int, int] = (246, 246, 246)


def sample_view(rng: np.random.Generator, view_index: int) -> ViewJitter:
    """Draw the jitter of view `view_index` of a product (the index sets the base pose).

    Args:
        rng: the product's seeded generator.
        view_index: 0, 1, 2, ... (each index is a different base pose).

    Returns:
        The ViewJitter.
    """
    base_angle = (26.0, 14.0, 36.0, 20.0)[view_index % 4]
    pose = Pose(sleeve_angle=base_angle + float(rng.uniform(-3, 3)),
                leg_spread=(0.05, 0.02, 0.09, 0.035)[view_index % 4] + float(rng.uniform(-0.01, 0.01)))
    tint = rng.uniform(-10, 6, size=3) + float(rng.uniform(228, 250))
    return ViewJitter(
        pose=pose,
        angle=float(rng.uniform(-5, 5)),
        scale=float(rng.uniform(0.9, 1.04)),
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        brightness=float(rng.uniform(0.88, 1.1)),
        gradient=(float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1))),
        background=tuple(int(c) for c in np.clip(tint, 0, 255)),
    )


@dataclass
class Shapes:
    """Body-space geometry of one garment.

    Attributes:
        body: polygons filled with the fabric (torso/skirt/legs/sleeves/added bands).
        cuts: (kind, coords) cut out of the fabric before `added` (neckline, open front).
        added: polygons filled with the fabric after the cuts (turtleneck, collars, lapels).
        lines: polylines drawn in the dark shade (seams, placket, front edge), body space.
        dots: (u, v, r) buttons drawn in the dark shade.
        top_v: highest fabric v (for the colour-block split).
        hem_v: hem v.
    """

    body: list[list[Point]]
    cuts: list[tuple[str, list[Point]]]
    added: list[list[Point]]
    lines: list[list[Point]]
    dots: list[tuple[float, float, float]]
    top_v: float
    hem_v: float


def _mirror(points: list[Point]) -> list[Point]:
    return [(1.0 - u, v) for u, v in points]


def sleeve_axis(side: int, fit: float, angle_deg: float) -> tuple[Point, Point, Point]:
    """Start point, direction and outward normal of a sleeve/arm axis.

    Args:
        side: +1 for the image-right side, -1 for the image-left side.
        fit: fit width multiplier.
        angle_deg: angle from the vertical.

    Returns:
        (start M, unit direction d, unit normal n pointing up/outward).
    """
    sw = SHOULDER_HALF * (1 + 0.25 * (fit - 1))
    bw = 0.125 * fit
    m = (0.5 + side * (sw + bw) / 2, (SHOULDER_Y + ARMPIT_Y) / 2)
    a = math.radians(angle_deg)
    d = (side * math.sin(a), math.cos(a))
    n = (side * math.cos(a), -math.sin(a))
    return m, d, n


def _sleeve(side: int, fit: float, angle: float, length: float) -> list[Point]:
    sw = SHOULDER_HALF * (1 + 0.25 * (fit - 1))
    bw = 0.125 * fit
    s = (0.5 + side * sw, SHOULDER_Y)
    a = (0.5 + side * bw, ARMPIT_Y)
    m, d, n = sleeve_axis(side, fit, angle)
    end_w = (0.052 if length < 0.2 else 0.036) * (0.6 + 0.4 * fit)
    e = (m[0] + d[0] * length, m[1] + d[1] * length)
    return [s, (e[0] + n[0] * end_w, e[1] + n[1] * end_w), (e[0] - n[0] * end_w, e[1] - n[1] * end_w), a]


def _upper(fit: float, hem: float, sleeveless: bool, flare: float = 0.0) -> list[Point]:
    """Right half outline of a bodice from neck to hem (image-right side), top to bottom."""
    sw = 0.118 if sleeveless else SHOULDER_HALF * (1 + 0.25 * (fit - 1))
    pts: list[Point] = [(0.56, NECK_Y), (0.5 + sw, SHOULDER_Y), (0.5 + 0.125 * fit, ARMPIT_Y)]
    if hem > WAIST_Y + 0.02:
        pts.append((0.5 + 0.112 * fit, WAIST_Y))
    if hem > HIP_Y + 0.02:
        pts.append((0.5 + 0.13 * fit, HIP_Y))
    hem_half = (0.112 if hem < HIP_Y else 0.13) * fit + flare
    pts.append((0.5 + hem_half, hem))
    return pts


def _full(right_half: list[Point]) -> list[Point]:
    """Close a right-half outline into a symmetric polygon (right top->bottom, left bottom->top)."""
    return right_half + _mirror(right_half)[::-1]


def _neckline(neckline: str | None, kind: str) -> tuple[list[tuple[str, list[Point]]], list[list[Point]],
                                                        list[list[Point]], list[tuple[float, float, float]]]:
    cuts: list[tuple[str, list[Point]]] = []
    added: list[list[Point]] = []
    lines: list[list[Point]] = []
    dots: list[tuple[float, float, float]] = []
    if neckline in (None, "collarless"):
        if neckline == "collarless":
            cuts.append(("ellipse", [(0.44, NECK_Y - 0.04), (0.56, NECK_Y + 0.05)]))
    elif neckline == "crew neck":
        cuts.append(("ellipse", [(0.44, NECK_Y - 0.035), (0.56, NECK_Y + 0.035)]))
    elif neckline == "scoop neck":
        cuts.append(("ellipse", [(0.425, NECK_Y - 0.07), (0.575, NECK_Y + 0.08)]))
    elif neckline == "v-neck":
        cuts.append(("polygon", [(0.435, NECK_Y - 0.02), (0.565, NECK_Y - 0.02), (0.5, 0.31)]))
    elif neckline == "square neck":
        cuts.append(("polygon", [(0.435, NECK_Y - 0.03), (0.565, NECK_Y - 0.03), (0.565, 0.255), (0.435, 0.255)]))
    elif neckline == "turtleneck":
        cuts.append(("ellipse", [(0.44, NECK_Y - 0.035), (0.56, NECK_Y + 0.03)]))
        added.append([(0.452, 0.115), (0.548, 0.115), (0.552, 0.2), (0.448, 0.2)])
        lines += [[(0.455, 0.14), (0.545, 0.14)], [(0.452, 0.165), (0.548, 0.165)]]
    elif neckline == "point collar":
        cuts.append(("polygon", [(0.45, NECK_Y - 0.03), (0.55, NECK_Y - 0.03), (0.5, 0.25)]))
        added += [[(0.455, NECK_Y - 0.015), (0.5, 0.245), (0.43, 0.255)],
                  [(0.545, NECK_Y - 0.015), (0.5, 0.245), (0.57, 0.255)]]
        lines += [[(0.455, NECK_Y - 0.015), (0.43, 0.255), (0.5, 0.245), (0.57, 0.255), (0.545, NECK_Y - 0.015)]]
    elif neckline == "band collar":
        cuts.append(("ellipse", [(0.455, NECK_Y - 0.03), (0.545, NECK_Y + 0.02)]))
        added.append([(0.448, 0.15), (0.552, 0.15), (0.556, 0.19), (0.444, 0.19)])
        lines.append([(0.444, 0.19), (0.556, 0.19)])
    elif neckline == "notch lapel":
        cuts.append(("polygon", [(0.44, NECK_Y - 0.03), (0.56, NECK_Y - 0.03), (0.5, 0.40)]))
        added += [[(0.44, NECK_Y - 0.01), (0.5, 0.40), (0.40, 0.26), (0.425, 0.23)],
                  [(0.56, NECK_Y - 0.01), (0.5, 0.40), (0.60, 0.26), (0.575, 0.23)]]
        lines += [[(0.44, NECK_Y - 0.01), (0.425, 0.23), (0.40, 0.26), (0.5, 0.40)],
                  [(0.56, NECK_Y - 0.01), (0.575, 0.23), (0.60, 0.26), (0.5, 0.40)]]
    elif neckline == "stand collar":
        cuts.append(("ellipse", [(0.455, NECK_Y - 0.03), (0.545, NECK_Y + 0.02)]))
        added.append([(0.445, 0.135), (0.555, 0.135), (0.558, 0.195), (0.442, 0.195)])
        lines.append([(0.442, 0.195), (0.558, 0.195)])
    else:
        raise ValueError(f"unknown neckline {neckline!r} for kind {kind!r}")
    return cuts, added, lines, dots


def garment_shapes(g: Garment, pose: Pose = Pose()) -> Shapes:
    """Body-space geometry of a garment in a pose.

    Args:
        g: the garment.
        pose: sleeve angle and leg spread.

    Returns:
        Shapes (polygons, cuts, detail lines).
    """
    fit = FIT_WIDTH[g.fit]
    hem = HEM_Y[g.kind][g.length]
    body: list[list[Point]] = []
    lines: list[list[Point]] = []
    dots: list[tuple[float, float, float]] = []
    cuts: list[tuple[str, list[Point]]] = []
    added: list[list[Point]] = []
    top_v = NECK_Y
    sub = g.subcategory
    if g.kind in ("top", "jacket", "dress"):
        sleeveless = g.sleeve_length in (None, "sleeveless")
        if g.kind == "dress":
            if "A-LINE" in sub:
                half = _upper(fit, WAIST_Y, sleeveless)[:-1] + [(0.5 + 0.112 * fit, WAIST_Y)]
                half.append((0.5 + 0.112 * fit + (hem - WAIST_Y) * (0.3 + pose.leg_spread), hem))
            elif "SHIFT" in sub:
                half = _upper(fit, ARMPIT_Y, sleeveless)[:-1] + [(0.5 + 0.13 * fit, ARMPIT_Y + 0.01)]
                half.append((0.5 + 0.14 * fit + (hem - WAIST_Y) * 0.08, hem))
            else:  # sheath
                half = _upper(fit, hem, sleeveless)
                half[-1] = (0.5 + 0.118 * fit, hem)
            lines.append([(0.5 - 0.11 * fit, WAIST_Y), (0.5 + 0.11 * fit, WAIST_Y)] if "SHIFT" not in sub else [])
        else:
            half = _upper(fit, hem, sleeveless, flare=0.01 * (fit - 1))
        body.append(_full(half))
        if not sleeveless:
            length = SLEEVE_LENGTH[g.sleeve_length or "long"]
            for side in (1, -1):
                body.append(_sleeve(side, fit, pose.sleeve_angle, length))
                sw = SHOULDER_HALF * (1 + 0.25 * (fit - 1))
                lines.append([(0.5 + side * sw, SHOULDER_Y), (0.5 + side * 0.125 * fit, ARMPIT_Y)])
        c, a, li, d = _neckline(g.neckline, g.kind)
        cuts += c
        added += a
        lines += li
        dots += d
        if sub in ("SHIRTS", "BLOUSES") and g.neckline in ("point collar", "band collar"):
            start = 0.25 if g.neckline == "point collar" else 0.19
            lines.append([(0.5, start), (0.5, hem)])
            n_buttons = max(2, int((hem - start) / 0.07))
            dots += [(0.508, start + 0.03 + i * (hem - start - 0.05) / max(1, n_buttons - 1), 0.007)
                     for i in range(n_buttons)]
        if g.kind == "jacket":
            start = 0.40 if g.neckline == "notch lapel" else NECK_Y + 0.04
            lines.append([(0.5, start), (0.5, hem)])
            dots += [(0.515, start + 0.04 + i * 0.08, 0.009) for i in range(max(1, int((hem - start - 0.03) / 0.08)))]
            lines += [[(0.5 - 0.1 * fit, min(hem - 0.04, 0.5)), (0.5 - 0.04, min(hem - 0.04, 0.5))],
                      [(0.5 + 0.04, min(hem - 0.04, 0.5)), (0.5 + 0.1 * fit, min(hem - 0.04, 0.5))]]
    elif g.kind == "skirt":
        top_v = WAIST_Y
        hw = 0.112 * fit
        if "A-LINE" in sub:
            half = [(0.5 + hw, WAIST_Y), (0.5 + hw + (hem - WAIST_Y) * (0.3 + pose.leg_spread), hem)]
        else:
            half = [(0.5 + hw, WAIST_Y), (0.5 + 0.135 * fit, HIP_Y), (0.5 + 0.118 * fit, hem)]
        body.append(_full(half))
        lines.append([(0.5 - hw, WAIST_Y + 0.03), (0.5 + hw, WAIST_Y + 0.03)])
        if "PENCIL" in sub and hem > 0.75:
            lines.append([(0.5, hem - 0.09), (0.5, hem)])  # back slit
    elif g.kind == "pants":
        top_v = WAIST_Y
        hw = 0.112 * fit
        leg_w = 0.055 * fit + (0.01 if g.subcategory == "SHORTS" else 0.0)
        spread = pose.leg_spread
        cx = 0.5 + 0.068 * fit + spread * (hem - HIP_Y)
        outer = cx + leg_w
        inner = max(0.505, cx - leg_w)
        right = [(0.5 + hw, WAIST_Y), (0.5 + 0.135 * fit, HIP_Y), (outer, hem), (inner, hem), (0.5, CROTCH_Y)]
        body.append(right[:-1] + [(0.5, CROTCH_Y)] + _mirror(right[:-1])[::-1])
        lines += [[(0.5 - hw, WAIST_Y + 0.03), (0.5 + hw, WAIST_Y + 0.03)], [(0.5, WAIST_Y + 0.03), (0.5, CROTCH_Y)]]
        lines += [[(0.5 + hw - 0.01, WAIST_Y + 0.03), (0.5 + hw + 0.005, WAIST_Y + 0.09)],
                  [(0.5 - hw + 0.01, WAIST_Y + 0.03), (0.5 - hw - 0.005, WAIST_Y + 0.09)]]
    else:
        raise ValueError(f"unknown garment kind {g.kind!r} (product {g.product_id})")
    return Shapes([b for b in body if b], cuts, added, [li for li in lines if li], dots, top_v, hem)


@dataclass(frozen=True)
class Frame:
    """Affine map from body space to pixels: x = a u + b v + c, y = d u + e v + f."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    @property
    def s(self) -> float:
        """Pixels per body unit."""
        return math.hypot(self.a, self.d)

    def px(self, points: list[Point]) -> list[Point]:
        """Map body-space points to pixel coordinates."""
        return [(self.a * u + self.b * v + self.c, self.d * u + self.e * v + self.f) for u, v in points]

    def grid(self, height: int, width: int, box: tuple[int, int, int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates (u, v) of every pixel centre, each (H, W) float32 (or of `box` = y0, y1, x0, x1)."""
        y0, y1, x0, x1 = box or (0, height, 0, width)
        det = self.a * self.e - self.b * self.d
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - self.c  # (1, W)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - self.f  # (H, 1)
        u = (self.e * xs - self.b * ys) / det  # (H, W)
        v = (-self.d * xs + self.a * ys) / det  # (H, W)
        return u, v

    @staticmethod
    def scaled(s: float, ox: float, oy: float) -> Frame:
        """x = ox + u s, y = oy + v s."""
        return Frame(s, 0.0, ox, 0.0, s, oy)

    @staticmethod
    def product(kind: str, height: int, width: int, jitter: ViewJitter | None = None) -> Frame:
        """The product-shot frame of `kind` (fits the shorter side), with a view's shift/scale/rotation."""
        cu, cv, half = PRODUCT_FRAME[kind]
        jitter = jitter or ViewJitter()
        s = min(height, width) / (2 * half) * jitter.scale
        rot = math.radians(jitter.angle)
        a, b = s * math.cos(rot), -s * math.sin(rot)
        d, e = s * math.sin(rot), s * math.cos(rot)
        cx = width / 2 + jitter.shift[0] * width
        cy = height / 2 + jitter.shift[1] * height
        return Frame(a, b, cx - a * cu - b * cv, d, e, cy - d * cu - e * cv)


def pattern_period(g: Garment) -> float:
    """Pattern period in body units: a per-product nuisance derived from the product id."""
    return 0.04 + 0.02 * ((g.product_id * 2654435761) % 1009) / 1009


def pattern_mask(g: Garment, u: np.ndarray, v: np.ndarray, shapes: Shapes) -> np.ndarray:
    """Boolean (H, W) mask of the secondary-colour pattern in body coordinates."""
    p = pattern_period(g)
    if g.pattern == "solid":
        return np.zeros(u.shape, dtype=bool)
    if g.pattern == "vertical stripes":
        return np.mod(u, p) < 0.42 * p
    if g.pattern == "horizontal stripes":
        return np.mod(v, p) < 0.42 * p
    if g.pattern == "checks":
        q = p * 1.3
        return (np.floor(u / q) + np.floor(v / q)) % 2 == 0
    if g.pattern == "polka dots":
        q = p * 1.4
        row = np.floor(v / q)
        fu = np.mod(u / q + 0.5 * row, 1.0) - 0.5
        fv = np.mod(v / q, 1.0) - 0.5
        return fu * fu + fv * fv < 0.24**2
    if g.pattern == "colour block":
        return v > (shapes.top_v + shapes.hem_v) / 2
    raise ValueError(f"unknown pattern {g.pattern!r} (product {g.product_id})")


def shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Darken (factor < 1) or lighten (factor > 1, towards white) a colour."""
    if factor <= 1:
        return tuple(int(c * factor) for c in rgb)
    return tuple(int(c + (255 - c) * (factor - 1)) for c in rgb)


def detail_colour(g: Garment) -> tuple[int, int, int]:
    """Colour of seams and outlines: a dark shade of the primary (mid grey for black)."""
    rgb = COLOURS[g.primary_colour]
    return shade(rgb, 0.55) if sum(rgb) > 150 else (92, 92, 96)


def ellipse_points(box: list[Point], n: int = 20) -> list[Point]:
    (u0, v0), (u1, v1) = box
    cu, cv, ru, rv = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
    return [(cu + ru * math.cos(2 * math.pi * i / n), cv + rv * math.sin(2 * math.pi * i / n)) for i in range(n)]


def edges(mask: np.ndarray) -> np.ndarray:
    """Border pixels of a boolean mask (inside pixels with an outside 4-neighbour)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def garment_mask(shapes: Shapes, frame: Frame, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) fabric mask: body polygons, minus cuts, plus added parts."""
    mask_img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_img)
    for poly in shapes.body:
        draw.polygon(frame.px(poly), fill=255)
    for kind, coords in shapes.cuts:
        draw.polygon(frame.px(ellipse_points(coords) if kind == "ellipse" else coords), fill=0)
    for poly in shapes.added:
        draw.polygon(frame.px(poly), fill=255)
    return np.asarray(mask_img) > 127


def garment_index(g: Garment, frame: Frame, height: int, width: int, pose: Pose = Pose(),
                  outline: bool = True) -> np.ndarray:
    """Draw a garment as a colour-index map.

    Args:
        g: the garment.
        frame: body space -> pixel map.
        height: canvas height in pixels.
        width: canvas width in pixels.
        pose: the pose.
        outline: mark the silhouette's border pixels as detail.

    Returns:
        uint8 (H, W): 0 outside the garment, 1 primary colour, 2 secondary (pattern) colour,
        3 detail colour (outline, seams, buttons); see :func:`garment_palette`.
    """
    shapes = garment_shapes(g, pose)
    mask = garment_mask(shapes, frame, height, width)  # (H, W)
    idx = mask.astype(np.uint8)  # (H, W)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if g.pattern != "solid" and len(rows):
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        u, v = frame.grid(height, width, (y0, y1, x0, x1))  # (h, w) of the garment's bounding box
        box = idx[y0:y1, x0:x1]
        box[(box == 1) & pattern_mask(g, u, v, shapes)] = 2
    if outline:
        idx[edges(mask)] = 3
    img = Image.frombuffer("L", (width, height), idx.tobytes(), "raw", "L", 0, 1)
    d = ImageDraw.Draw(img)
    lw = max(1, round(frame.s * 0.006))
    for line in shapes.lines:
        d.line(frame.px(line), fill=3, width=lw)
    for cu, cv, r in shapes.dots:
        (x, y), rr = frame.px([(cu, cv)])[0], max(1.0, r * frame.s)
        d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=3)
    out = np.asarray(img).copy()
    out[~mask] = 0
    return out


def garment_palette(g: Garment, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """uint8 (4, 3) palette of :func:`garment_index`: background, primary, secondary, detail."""
    return np.array([background, COLOURS[g.primary_colour], COLOURS[g.secondary_colour or g.primary_colour],
                     detail_colour(g)], dtype=np.uint8)


def draw_garment(g: Garment, frame: Frame, height: int, width: int, pose: Pose = Pose(),
                 outline: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Draw a garment on a black canvas: (rgb uint8 (H, W, 3), mask bool (H, W))."""
    idx = garment_index(g, frame, height, width, pose, outline)
    return garment_palette(g)[idx], idx > 0


@lru_cache(maxsize=512)
def _gradient(height: int, width: int, gx: int, gy: int) -> Image.Image:
    """RGB darkening ramp for ImageChops.multiply; gx, gy in hundredths of full scale."""
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    ramp = 1.0 - (abs(gx) + abs(gy)) / 200 + gx / 100 * xs + gy / 100 * ys  # (H, W), in [1 - |gx| - |gy|, 1]
    ramp = np.clip(ramp * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(ramp[..., None], 3, axis=2))


def light(img: Image.Image, jitter: ViewJitter) -> Image.Image:
    """Apply a view's linear lighting gradient (the brightness goes into the palette)."""
    gx, gy = round(jitter.gradient[0] * 100), round(jitter.gradient[1] * 100)
    if gx == 0 and gy == 0:
        return img
    return ImageChops.multiply(img, _gradient(img.height, img.width, gx, gy))


def render_garment(g: Garment, size: tuple[int, int] = (256, 256), jitter: ViewJitter | None = None,
                   supersample: float = 1.0) -> Image.Image:
    """Render a product shot of a garment.

    Args:
        g: the garment.
        size: output (height, width) in pixels.
        jitter: the view's nuisance (None: canonical view on a light grey background).
        supersample: drawing resolution relative to `size` (< 1 draws smaller, then resizes).

    Returns:
        RGB PIL image of `size`.
    """
    jitter = jitter or ViewJitter()
    height, width = size
    dh, dw = max(8, round(height * supersample)), max(8, round(width * supersample))
    frame = Frame.product(g.kind, dh, dw, jitter)
    idx = garment_index(g, frame, dh, dw, jitter.pose)
    pal = np.clip(garment_palette(g, jitter.background) * jitter.brightness, 0, 255).astype(np.uint8)
    img = Image.frombuffer("P", (dw, dh), idx.tobytes(), "raw", "P", 0, 1)
    img.putpalette(pal.reshape(-1).tolist())
    img = light(img.convert("RGB"), jitter)
    if (dh, dw) != (height, width):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return img


def render_views(g: Garment, rng: np.random.Generator, n_views: int, size: tuple[int, int] = (256, 256),
                 supersample: float = 1.0) -> list[Image.Image]:
    """Render `n_views` jittered views of one product (view i uses base pose i)."""
    return [render_garment(g, size, sample_view(rng, i), supersample) for i in range(n_views)]
