"""Caption attribute accuracy: the professional-caption parser and the scoring against the sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unifashion.data.synthetic.attributes import SUBCATEGORIES, sample_garment
from unifashion.data.synthetic.captions import parse_professional, professional
from unifashion.tasks.fic.attributes import attribute_accuracy, read_product_attributes


def test_parser_inverts_the_caption_writer_for_every_subcategory():
    rng = np.random.default_rng(0)
    for sub in SUBCATEGORIES:
        for i in range(40):
            g = sample_garment(rng, i, sub)
            named = parse_professional(professional(g))
            assert named == {"garment": sub.noun, "sleeve_length": g.sleeve_length, "primary_colour": g.primary_colour,
                             "pattern": g.pattern, "secondary_colour": g.secondary_colour}, professional(g)


def test_parser_returns_none_for_what_is_not_there():
    assert set(parse_professional("kjh kjh").values()) == {None}
    named = parse_professional("Long sleeve jacket in navy. Zigzags in red throughout.")
    assert named["primary_colour"] == "navy" and named["sleeve_length"] == "long"
    assert named["pattern"] is None and named["secondary_colour"] is None


def _truth(pid, colour, pattern, sleeve, noun):
    return pid, {"primary_colour": colour, "pattern": pattern, "sleeve_length": sleeve, "garment": noun}


def test_attribute_accuracy_by_hand():
    truth = dict([
        _truth(1, "navy", "solid", "long", "jacket"),
        _truth(2, "red", "checks", None, "trousers"),
        _truth(3, "blue", "polka dots", "short", "shirt"),
        _truth(4, "white", "vertical stripes", "sleeveless", "a-line dress"),
    ])
    captions = {
        1: "Long sleeve jacket in navy. Solid colour throughout. Notch lapel.",  # all right
        2: "Trousers in red. Vertical stripes in navy throughout.",              # colour, garment right
        3: "Long sleeve shirt in blue. Polka dots in red throughout.",           # sleeve wrong
        4: "not a caption",                                                      # all wrong
    }
    acc = attribute_accuracy(captions, truth)
    assert acc == {"primary_colour": 75.0, "pattern": 50.0, "sleeve_length": 100 / 3, "garment": 75.0}
    with pytest.raises(KeyError, match="no attributes"):
        attribute_accuracy({9: "x"}, truth)


def test_read_product_attributes(tmp_path):
    rows = [
        {"split": "validation", "product_id": 7, "garment": {"subcategory": "JACKETS", "primary_colour": "navy",
                                                              "pattern": "solid", "sleeve_length": "long"}},
        {"split": "validation", "product_id": 7, "garment": {"subcategory": "JACKETS", "primary_colour": "navy",
                                                              "pattern": "solid", "sleeve_length": "long"}},
        {"split": "train", "product_id": 8, "garment": {"subcategory": "TROUSERS", "primary_colour": "red",
                                                         "pattern": "checks", "sleeve_length": None}},
    ]
    (tmp_path / "attributes.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    products = read_product_attributes(tmp_path / "attributes.jsonl", "validation")
    assert list(products) == [7] and products[7]["garment"] == "jacket" and products[7]["primary_colour"] == "navy"
    with pytest.raises(FileNotFoundError, match="attributes.jsonl"):
        read_product_attributes(tmp_path / "missing" / "attributes.jsonl", "validation")
