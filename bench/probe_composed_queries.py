"""What do the composed queries Z_R of a checkpoint hold about the target (issue 9)?

Z_R (reference image + modifying text, bi-directional mode) conditions the composed caption (eq. 11) and
the composed image (eq. 12). For Fashion-IQ triplets this reports:

- linear-probe accuracy of the TARGET's primary colour (and sleeve length) from Z_R, from the reference's
  own queries Z_ref and from the target's own queries Z_T (the ceiling), trained on training triplets and
  scored on validation triplets; "copy" is the share of validation triplets whose target keeps the
  reference's value (what a probe that reads the reference alone can reach);
- the mean cosine similarity of the flattened Z_R and Z_ref to Z_T (does Z_R sit nearer the target?).

Validation data is only scored, never fitted.

    python bench/probe_composed_queries.py --ckpt runs/demo/composed.ckpt --data data/synthetic
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
import torch.nn.functional as F

ATTRIBUTES = ("primary_colour", "sleeve_length")


def _probe_fn():
    spec = importlib.util.spec_from_file_location("probe_queries", Path(__file__).with_name("probe_queries.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.probe


def main() -> None:
    from unifashion.api import UniFashion
    from unifashion.data.fashioniq import FashionIQDataModule, eval_text
    from unifashion.data.files import load_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/demo/composed.ckpt")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--train", type=int, default=1200, help="training triplets fitted (over the categories)")
    args = parser.parse_args()
    probe = _probe_fn()

    model = UniFashion.from_checkpoint(args.ckpt, device="cpu", show_progress=False)
    root = Path(args.data) / "fashioniq"
    attrs = {}
    with open(root / "fashionIQ_dataset" / "attributes.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            attrs[rec["asin"]] = rec["garment"]
    dm = FashionIQDataModule(root=str(root), image_size=model.encoder.config.image_size)

    def features(split: str, limit: int | None):
        trips = [t for cat in ("dress", "shirt", "toptee") for t in dm.triplets(cat, split) if t.target]
        if limit:
            trips = trips[:: max(1, len(trips) // limit)][:limit]
        px = lambda asin: dm.eval_transform(load_image(dm.images.path(asin)))  # noqa: E731
        ref = torch.stack([px(t.candidate) for t in trips])  # (N, 3, S, S)
        tgt = torch.stack([px(t.target) for t in trips])
        z_r = model.composed_queries(ref, [eval_text(t.captions) for t in trips]).flatten(1)  # (N, Q*H)
        z_ref = model.image_queries(ref).flatten(1)
        z_t = model.image_queries(tgt).flatten(1)
        return trips, {"Z_R": z_r, "Z_ref": z_ref, "Z_T": z_t}

    train, f_train = features("train", args.train)
    val, f_val = features("val", None)
    print(f"{args.ckpt}: {len(train)} training / {len(val)} validation triplets")
    for name in ("Z_R", "Z_ref"):
        cos = F.cosine_similarity(f_val[name], f_val["Z_T"], dim=1).mean().item()
        print(f"  mean cos({name}, Z_T) = {cos:.3f}")
    for attribute in ATTRIBUTES:
        values = sorted({str(attrs[t.target][attribute]) for t in train + val}
                        | {str(attrs[t.candidate][attribute]) for t in train + val})
        index = {v: i for i, v in enumerate(values)}
        y_tr = torch.tensor([index[str(attrs[t.target][attribute])] for t in train])
        y_va = torch.tensor([index[str(attrs[t.target][attribute])] for t in val])
        copy = 100.0 * sum(attrs[t.target][attribute] == attrs[t.candidate][attribute] for t in val) / len(val)
        accs = {name: probe(f_train[name], y_tr, f_val[name], y_va, len(values), mlp=False)
                for name in ("Z_R", "Z_ref", "Z_T")}
        print(f"  target {attribute}: " + ", ".join(f"{k} {v:.1f} %" for k, v in accs.items())
              + f"; reference keeps it in {copy:.1f} %")


if __name__ == "__main__":
    main()
