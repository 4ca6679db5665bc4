"""A simple person figure wearing a synthetic upper-body garment (VITON-HD style).

Drawn in the body space of ``render.py`` (so the garment geometry is shared with the in-shop
cloth images), with a CIHP label map drawn from the very same polygons:
0 background, 2 hair, 5 upper-clothes, 9 pants, 10 neck/torso skin, 13 face, 14 left-arm
(image right), 15 right-arm (image left), 16 left-leg, 17 right-leg. The framing is VITON-HD's
(head to below the knees), so the ankles and feet fall outside the image: their BODY_25
keypoints are (0, 0, 0) as OpenPose writes missing joints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from unifashion.data.synthetic.attributes import COLOURS, Garment
from unifashion.data.synthetic.render import (
    ARMPIT_Y,
    FIT_WIDTH,
    HIP_Y,
    NECK_Y,
    Frame,
    Pose,
    ellipse_points,
    garment_index,
    garment_palette,
    sleeve_axis,
)

SKIN_TONES = ((241, 204, 176), (224, 172, 136), (198, 140, 100), (150, 100, 70), (108, 70, 48))
HAIR_COLOURS = ((30, 24, 20), (80, 52, 30), (160, 120, 60), (200, 170, 110), (60, 60, 64))
PANTS_COLOURS = ("navy", "black", "blue", "beige", "grey", "olive")

LABELS = {"background": 0, "hair": 2, "upper-clothes": 5, "pants": 9, "neck": 10, "face": 13, "left-arm": 14,
          "right-arm": 15, "left-leg": 16, "right-leg": 17}
"""CIHP labels used (values of image-parse-v3)."""

UPPER_LABELS = (5, 10, 14, 15)
"""Labels removed by the agnostic parse and greyed in the agnostic image (try-on region)."""


@dataclass(frozen=True)
class Person:
    """Appearance and pose of one person.

    Attributes:
        skin: skin RGB.
        hair: hair RGB.
        pants: pants colour name (a key of COLOURS).
        shorts: wears shorts (legs visible) instead of trousers.
        arm_angle: arm angle from the vertical, degrees.
        leg_spread: leg spread (body units per unit of v).
        shift: horizontal offset of the figure in body units.
        background: background RGB.
    """

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    pants: str
    shorts: bool
    arm_angle: float
    leg_spread: float
    shift: float
    background: tuple[int, int, int]


def sample_person(rng: np.random.Generator) -> Person:
    """Draw a person's appearance and pose."""
    bg = tuple(int(c) for c in np.clip(rng.uniform(215, 245) + rng.uniform(-8, 8, size=3), 0, 255))
    return Person(
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        pants=PANTS_COLOURS[int(rng.integers(len(PANTS_COLOURS)))],
        shorts=bool(rng.random() < 0.3),
        arm_angle=float(rng.uniform(8, 18)),
        leg_spread=float(rng.uniform(0.0, 0.05)),
        shift=float(rng.uniform(-0.03, 0.03)),
        background=bg,
    )


def person_frame(person: Person, height: int, width: int) -> Frame:
    """Body space -> pixels for a height x width (4:3) person image."""
    s = height * 0.97
    return Frame.scaled(s, width / 2 - (0.5 - person.shift) * s, 0.01 * height)


def _arm(side: int, angle: float, fit: float) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    m, d, n = sleeve_axis(side, fit, angle)
    length = 0.40
    w0, w1 = 0.034, 0.026
    e = (m[0] + d[0] * length, m[1] + d[1] * length)
    poly = [(m[0] + n[0] * w0, m[1] + n[1] * w0), (e[0] + n[0] * w1, e[1] + n[1] * w1),
            (e[0] - n[0] * w1, e[1] - n[1] * w1), (m[0] - n[0] * w0, m[1] - n[1] * w0)]
    return poly, (e[0] + d[0] * 0.025, e[1] + d[1] * 0.025)


def _leg(side: int, spread: float, bottom: float = 1.3) -> list[tuple[float, float]]:
    top_c = 0.5 + side * 0.065
    bot_c = top_c + side * spread * (bottom - HIP_Y)
    w = 0.058
    return [(top_c - w, HIP_Y), (top_c + w, HIP_Y), (bot_c + w * 0.8, bottom), (bot_c - w * 0.8, bottom)]


def _pants(side_spread: float, shorts: bool) -> list[tuple[float, float]]:
    hem = 0.74 if shorts else 1.3
    right_c = 0.5 + 0.065 + side_spread * (hem - HIP_Y)
    w = 0.068
    right = [(0.5 + 0.115, 0.45), (0.5 + 0.13, HIP_Y), (right_c + w, hem), (max(0.505, right_c - w), hem)]
    left = [(1.0 - u, v) for u, v in right]
    return right + [(0.5, 0.62)] + left[::-1]


@dataclass
class PersonRender:
    """All aligned outputs of one person render.

    Attributes:
        image: RGB person image.
        parse: uint8 (H, W) CIHP label map.
        garment_detail: bool (H, W), garment outline and seams (the sketch strokes).
        keypoints: float (25, 3) BODY_25 (x, y, confidence) in pixels; missing joints are 0.
    """

    image: Image.Image
    parse: np.ndarray
    garment_detail: np.ndarray
    keypoints: np.ndarray


def garment_on_person(g: Garment, person: Person, height: int, width: int) -> np.ndarray:
    """Colour-index map (see render.garment_index) of `g` worn in `person`'s pose."""
    frame = person_frame(person, height, width)
    return garment_index(g, frame, height, width, Pose(sleeve_angle=person.arm_angle, leg_spread=0.0))


def keypoints(person: Person, height: int, width: int, confidence: np.ndarray, fit: float = 1.0) -> np.ndarray:
    """BODY_25 keypoints (25, 3) in pixels; joints outside the image are (0, 0, 0).

    `fit` is the worn garment's width multiplier: the arms run along its sleeve axes.
    """
    frame = person_frame(person, height, width)
    kp: dict[int, tuple[float, float]] = {0: (0.5, 0.105), 1: (0.5, NECK_Y + 0.01), 8: (0.5, HIP_Y + 0.01),
                                          15: (0.478, 0.09), 16: (0.522, 0.09), 17: (0.445, 0.1), 18: (0.555, 0.1)}
    for side, (sh, el, wr) in ((-1, (2, 3, 4)), (1, (5, 6, 7))):
        m, d, _ = sleeve_axis(side, fit, person.arm_angle)
        kp[sh] = (0.5 + side * 0.135, 0.21)
        kp[el] = (m[0] + d[0] * 0.19, m[1] + d[1] * 0.19)
        kp[wr] = (m[0] + d[0] * 0.39, m[1] + d[1] * 0.39)
    for side, (hip, knee, ankle) in ((-1, (9, 10, 11)), (1, (12, 13, 14))):
        c = 0.5 + side * 0.065
        kp[hip] = (c, HIP_Y + 0.01)
        kp[knee] = (c + side * person.leg_spread * (0.85 - HIP_Y), 0.85)
        kp[ankle] = (c + side * person.leg_spread * (1.12 - HIP_Y), 1.12)
    out = np.zeros((25, 3), dtype=np.float64)
    for j, (u, v) in kp.items():
        x, y = frame.px([(u, v)])[0]
        if 0 <= x < width and 0 <= y < height:
            out[j] = (round(x, 3), round(y, 3), round(float(confidence[j]), 6))
    return out


def render_person(g: Garment, person: Person, height: int = 256, width: int = 192,
                  confidence: np.ndarray | None = None) -> PersonRender:
    """Draw a person wearing upper garment `g`, its label map and keypoints.

    Args:
        g: an upper-body garment (kind "top").
        person: appearance and pose.
        height: image height (VITON-HD: 4:3 height:width).
        width: image width.
        confidence: (25,) keypoint confidences (default 0.9).

    Returns:
        PersonRender.
    """
    if g.kind != "top":
        raise ValueError(f"VITON-HD persons wear upper-body garments (kind 'top'); got {g.kind} "
                         f"(product {g.product_id})")
    frame = person_frame(person, height, width)
    parse = Image.new("L", (width, height), 0)
    pd = ImageDraw.Draw(parse)
    # Legs, pants, torso skin, arms (back to front), then the garment, then the head.
    for side, label in ((1, 16), (-1, 17)):
        pd.polygon(frame.px(_leg(side, person.leg_spread)), fill=label)
    pd.polygon(frame.px(_pants(person.leg_spread, person.shorts)), fill=9)
    pd.polygon(frame.px([(0.47, 0.12), (0.53, 0.12), (0.55, NECK_Y + 0.02), (0.62, ARMPIT_Y), (0.61, 0.47),
                         (0.39, 0.47), (0.38, ARMPIT_Y), (0.45, NECK_Y + 0.02)]), fill=10)  # neck and torso skin
    for side, label in ((-1, 15), (1, 14)):
        arm, hand = _arm(side, person.arm_angle, FIT_WIDTH[g.fit])  # arms inside the sleeves
        pd.polygon(frame.px(arm), fill=label)
        pd.polygon(frame.px(ellipse_points([(hand[0] - 0.03, hand[1] - 0.03), (hand[0] + 0.03, hand[1] + 0.035)], 12)),
                   fill=label)
    labels = np.asarray(parse).copy()  # (H, W)
    idx = garment_on_person(g, person, height, width)  # (H, W)
    labels[idx > 0] = 5
    head = Image.fromarray(labels)
    hd = ImageDraw.Draw(head)
    hd.polygon(frame.px(ellipse_points([(0.43, 0.025), (0.57, 0.16)])), fill=2)
    hd.polygon(frame.px(ellipse_points([(0.445, 0.045), (0.555, 0.175)])), fill=13)
    hd.polygon(frame.px([(0.44, 0.07), (0.5, 0.03), (0.56, 0.07), (0.53, 0.06), (0.5, 0.075), (0.47, 0.06)]), fill=2)
    labels = np.asarray(head).copy()
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[0] = person.background
    palette[[10, 13, 14, 15, 16, 17]] = person.skin
    palette[2] = person.hair
    palette[9] = COLOURS[person.pants]
    rgb = palette[labels]  # (H, W, 3)
    garment_rgb = garment_palette(g)[idx]  # (H, W, 3)
    on_garment = labels == 5
    rgb[on_garment] = garment_rgb[on_garment]
    img = Image.fromarray(rgb)
    d = ImageDraw.Draw(img)
    eye = max(1.0, frame.s * 0.006)
    for u in (0.478, 0.522):
        (x, y), = frame.px([(u, 0.1)])
        d.ellipse([x - eye, y - eye, x + eye, y + eye], fill=(40, 30, 30))
    conf = np.full(25, 0.9) if confidence is None else confidence
    detail = (idx == 3) & on_garment
    return PersonRender(img, labels, detail, keypoints(person, height, width, conf, FIT_WIDTH[g.fit]))


BODY25_LIMBS = ((1, 0), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
                (8, 12), (12, 13), (13, 14), (0, 15), (0, 16), (15, 17), (16, 18))


def render_skeleton(kp: np.ndarray, height: int, width: int) -> Image.Image:
    """OpenPose-style rendered skeleton (RGB, black background) of BODY_25 keypoints."""
    img = Image.new("RGB", (width, height), (0, 0, 0))
    d = ImageDraw.Draw(img)
    lw = max(1, round(height / 128))
    for i, (a, b) in enumerate(BODY25_LIMBS):
        if kp[a, 2] > 0 and kp[b, 2] > 0:
            hue = i / len(BODY25_LIMBS)
            colour = tuple(int(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
            d.line([(kp[a, 0], kp[a, 1]), (kp[b, 0], kp[b, 1])], fill=colour, width=lw)
    for x, y, c in kp:
        if c > 0:
            d.ellipse([x - lw, y - lw, x + lw, y + lw], fill=(255, 255, 255))
    return img
