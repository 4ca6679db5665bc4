"""The composed-caption check of the demo (`demo.composed.names_changed_attributes`): hand-made cases and
the renderer's own target captions, which name every changed attribute by construction."""

from __future__ import annotations

import json

from unifashion.data.fashioniq import FashionIQDataModule
from unifashion.data.synthetic.fashioniq import FashionIQSpec, write_fashioniq
from unifashion.demo.composed import names_changed_attributes

REF = {"primary_colour": "blue", "sleeve_length": "long", "fit": "regular", "neckline": "v-neck"}


def test_hand_made_cases():
    tgt = dict(REF, primary_colour="red", sleeve_length="sleeveless")
    assert names_changed_attributes("The dress is red. It has no sleeves and a v-neckline.", REF, tgt)
    assert names_changed_attributes("Sleeveless dress in red.", REF, tgt)
    assert not names_changed_attributes("The dress is red with long sleeves.", REF, tgt)  # sleeve missed
    assert not names_changed_attributes("The dress is blue. It has no sleeves.", REF, tgt)  # colour missed
    assert not names_changed_attributes("The dress is blue with long sleeves.", REF, dict(REF))  # nothing changed
    short = dict(REF, sleeve_length="short", fit="loose", neckline="square")
    assert names_changed_attributes("It has short sleeves, a square neckline and a loose fit.", REF, short)
    assert not names_changed_attributes("It has short sleeves and a loose fit.", REF, short)


def test_every_rendered_target_caption_names_its_changes(tmp_path):
    write_fashioniq(tmp_path, FashionIQSpec(triplets={"train": 4, "val": 12, "test": 2}, size=(40, 56)), seed=3)
    root = tmp_path
    records = {}
    with open(root / "fashionIQ_dataset" / "attributes.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            records[rec["asin"]] = rec
    dm = FashionIQDataModule(root=str(root), image_size=32)
    triplets = [t for cat in ("dress", "shirt", "toptee") for t in dm.triplets(cat, "val")]
    assert len(triplets) >= 12
    for style in ("detailed", "professional"):
        for t in triplets:
            ref, tgt = records[t.candidate], records[t.target]
            assert names_changed_attributes(tgt["captions"][style], ref["garment"], tgt["garment"]), (style, t)
    # the reference's own caption never names all of the target's changes
    assert not any(names_changed_attributes(records[t.candidate]["captions"]["detailed"],
                                            records[t.candidate]["garment"], records[t.target]["garment"])
                   for t in triplets)
