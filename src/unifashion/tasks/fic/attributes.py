"""Do the captions name the right attributes? Accuracy against the synthetic benchmark's sidecar.

n-gram metrics reward the caption template as much as its content; on the synthetic benchmark
every product's true attributes are known (``<dataset>/attributes.jsonl``), so the FashionGen-style
captions can be read back (`data.synthetic.captions.parse_professional`) and checked attribute by
attribute: the share of products whose caption names the right primary colour, pattern, sleeve
length and garment type. A caption that does not follow the template counts as wrong.

Sleeve accuracy is over products that have sleeves (skirts and trousers have none). Real datasets
have no sidecar, so these keys exist for synthetic data only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from unifashion.data.synthetic.attributes import SUBCATEGORY_BY_NAME
from unifashion.data.synthetic.captions import parse_professional

ATTRIBUTES = ("primary_colour", "pattern", "sleeve_length", "garment")
"""Attributes scored, in report order."""

SIDECAR = "attributes.jsonl"


def read_product_attributes(sidecar: str | Path, split: str) -> dict[int, dict[str, str | None]]:
    """Product id -> its attributes (the sidecar's ``garment`` record plus ``garment``: the noun).

    Raises:
        FileNotFoundError: no sidecar at `sidecar`.
    """
    sidecar = Path(sidecar)
    if not sidecar.is_file():
        raise FileNotFoundError(f"no synthetic attribute sidecar at {sidecar} (written by `unifashion data synth`)")
    products: dict[int, dict[str, str | None]] = {}
    with open(sidecar, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") != split or rec["product_id"] in products:
                continue
            garment = dict(rec["garment"])
            garment["garment"] = SUBCATEGORY_BY_NAME[garment["subcategory"]].noun
            products[rec["product_id"]] = garment
    return products


def attribute_accuracy(
    captions: Mapping[int, str], truth: Mapping[int, Mapping[str, str | None]]
) -> dict[str, float]:
    """Percent of products whose caption names the right value of each attribute.

    Args:
        captions: product id -> generated professional-style caption.
        truth: product id -> attributes (`read_product_attributes`); must cover every caption.

    Returns:
        ``{attribute: percent}`` for `ATTRIBUTES` (a key is left out when no product has the
        attribute, e.g. sleeves among trousers only).

    Raises:
        KeyError: a captioned product has no attributes.
    """
    missing = [pid for pid in captions if pid not in truth]
    if missing:
        raise KeyError(f"no attributes for products {missing[:5]} ({len(missing)} in all)")
    right = dict.fromkeys(ATTRIBUTES, 0)
    total = dict.fromkeys(ATTRIBUTES, 0)
    for pid, caption in captions.items():
        named = parse_professional(caption)
        for name in ATTRIBUTES:
            value = truth[pid].get(name)
            if value is None:  # attribute does not apply (no sleeves)
                continue
            total[name] += 1
            right[name] += int(named[name] == value)
    return {name: 100.0 * right[name] / total[name] for name in ATTRIBUTES if total[name]}
