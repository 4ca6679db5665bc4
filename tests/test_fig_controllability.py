"""The controllability checks of generated garments (tasks/fig/controllability.py), against renders whose
attributes are known and hand-made images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from unifashion.data.synthetic.attributes import SUBCATEGORIES, Garment, sample_garment
from unifashion.data.synthetic.render import ViewJitter, render_garment
from unifashion.data.transforms import pil_to_tensor
from unifashion.tasks.fig.controllability import (
    canonical_mask,
    erode,
    garment_controllability,
    garment_region,
    predict_shape,
    segmentable,
    shape_templates,
)

SIZE = (64, 64)


def _garment(sub: str, colour: str, pattern: str = "solid", sleeve: str | None = "long", **kw) -> Garment:
    s = next(s for s in SUBCATEGORIES if s.name == sub)
    g = Garment(1, s.category, s.name, s.kind, colour, None if pattern == "solid" else "white", pattern,
                sleeve if s.sleeves else None, s.lengths[0], s.necklines[0] if s.necklines else None, "regular")
    return dataclasses.replace(g, **kw)


def _shot(g: Garment, jitter: ViewJitter | None = None) -> torch.Tensor:
    return pil_to_tensor(render_garment(g, SIZE, jitter))  # (3, 64, 64) in [0, 1]


def test_erode_by_hand():
    m = np.zeros((7, 7), dtype=bool)
    m[1:6, 1:6] = True  # a 5 x 5 square
    assert np.array_equal(erode(m, 1), np.pad(np.ones((3, 3), bool), 2))
    assert erode(m, 2).sum() == 1 and erode(m, 5).sum() == 1  # never empties
    g = _garment("T-SHIRTS", "red", sleeve="short")
    region = garment_region(g, SIZE)
    assert region.any() and not (region & ~canonical_mask(g, SIZE)).any()
    assert region.sum() < canonical_mask(g, SIZE).sum()


def test_canonical_renders_score_full_marks():
    garments = [_garment("A-LINE DRESSES", "red", sleeve="sleeveless"), _garment("T-SHIRTS", "navy", sleeve="short"),
                _garment("JACKETS", "olive"), _garment("TROUSERS", "black"), _garment("PENCIL SKIRTS", "yellow")]
    images = torch.stack([_shot(g) for g in garments])
    scores = garment_controllability(images, garments)
    assert scores["colour_acc"] == 100 and scores["garment_acc"] == 100 and scores["sleeve_acc"] == 100
    assert (scores["n_colour"], scores["n_garment"], scores["n_sleeve"]) == (5, 5, 3)


def test_misses_are_counted():
    want = [_garment("T-SHIRTS", "red", sleeve="long"), _garment("TROUSERS", "blue")]
    wrong_colour = _shot(dataclasses.replace(want[0], primary_colour="green"))
    short_sleeves = _shot(dataclasses.replace(want[0], sleeve_length="short"))
    skirt = _shot(_garment("A-LINE SKIRTS", "blue"))
    uniform = torch.full((3, 64, 64), 0.9)  # no garment at all
    s = garment_controllability(torch.stack([wrong_colour, skirt]), want)
    assert s["colour_acc"] == 0 and s["garment_acc"] == 50  # the green t-shirt still is a top
    s = garment_controllability(torch.stack([short_sleeves, uniform]), want)
    assert s["colour_acc"] == 50  # red where the shirt is; the uniform image is grey there
    assert s["garment_acc"] == 50 and s["sleeve_acc"] == 0
    assert predict_shape(uniform) is None


def test_patterned_and_white_products_are_left_out():
    striped = _garment("T-SHIRTS", "red", pattern="vertical stripes", sleeve="short")
    white = _garment("T-SHIRTS", "white", sleeve="short")
    assert not segmentable(white) and segmentable(striped) and segmentable(_garment("TROUSERS", "beige"))
    s = garment_controllability(torch.stack([_shot(striped), _shot(white)]), [striped, white])
    assert (s["n_colour"], s["n_garment"], s["n_sleeve"]) == (1, 1, 1)
    assert s["colour_acc"] == 100  # the white t-shirt's region is white, even on the light background
    with pytest.raises(ValueError, match="garments"):
        garment_controllability(torch.stack([_shot(white)]), [white, white])
    nan = garment_controllability(torch.stack([_shot(striped)]), [striped])["colour_acc"]
    assert np.isnan(nan)


def test_jittered_views_keep_the_colour_check():
    """The eroded region stays on the fabric under the real shots' jitter (shift, scale, rotation)."""
    rng = np.random.default_rng(0)
    garments = [dataclasses.replace(sample_garment(rng, i, SUBCATEGORIES[i % len(SUBCATEGORIES)]), pattern="solid",
                                    secondary_colour=None) for i in range(28)]
    jitter = ViewJitter(angle=5.0, scale=0.9, shift=(0.04, -0.04), brightness=0.9)
    images = torch.stack([_shot(g, jitter) for g in garments])
    assert garment_controllability(images, garments)["colour_acc"] >= 90


def test_templates_cover_every_kind_and_sleeve():
    templates = shape_templates(SIZE)
    assert {t.kind for t in templates} == {s.kind for s in SUBCATEGORIES}
    assert {t.sleeve_length for t in templates if t.kind == "dress"} == {"sleeveless", "short", "long"}
    assert all(t.mask.shape == SIZE and t.mask.any() for t in templates)
