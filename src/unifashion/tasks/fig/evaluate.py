"""Fashion image generation (FIG) of a model: images from the queries of FashionGen validation
products (phase-1 q2I), FID/KID (proxy features unless Inception is available), colour accuracy on
the synthetic benchmark (DATASETS.md 6.5-6.6 for the try-on/design protocols)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unifashion.api import UniFashion
from unifashion.data.roots import fashiongen_root
from unifashion.data.transforms import denormalize
from unifashion.tasks.cmr.evaluate import SplitImages, fashiongen_split
from unifashion.tasks.fic.evaluate import first_image_per_product

log = logging.getLogger(__name__)


def _primary_colours(data_root) -> dict[int, str] | None:
    """Validation row -> requested primary colour, from the synthetic benchmark's attribute sidecar."""
    sidecar = fashiongen_root(data_root) / "attributes.jsonl"
    if not sidecar.is_file():
        return None
    colours: dict[int, str] = {}
    with open(sidecar, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["split"] == "validation":
                colours[int(rec["image"].rsplit("#", 1)[1])] = rec["garment"]["primary_colour"]
    return colours


def run_fig(model: UniFashion, data_root, out_dir, *, prefix: str = "", max_items: int | None = 64,
            sampler="dpmsolver++", steps: int = 20, guidance_scale=None, seed: int = 1234, batch_size: int = 16,
            grid_path=None) -> dict[str, float]:
    """FashionGen generation from queries: FID/KID of generated vs real validation images and, on the
    synthetic benchmark, the colour accuracy against the attribute ground truth. Writes the images to
    `out_dir/unpaired/` and an optional PNG grid."""
    from unifashion.tasks.fig.protocol import FidKid, write_generated

    model._require("generate")
    split = fashiongen_split(model, data_root)
    images = SplitImages(split.images)
    pairs = first_image_per_product(split, max_items)
    cfg = model.generator.config
    fid = FidKid("fashiongen", "queries", kid_subset_size=max(2, min(100, len(pairs))))
    colours = _primary_colours(data_root)
    fakes, reals, requested = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pixels = torch.stack([images[i] for i, _ in chunk])  # (b, 3, S, S)
        fake = model.generate_tensors(pixels, sampler=sampler, steps=steps, guidance_scale=guidance_scale,
                                      seed=seed + start, batch_size=batch_size)
        real = F.interpolate(denormalize(pixels), size=(cfg.height, cfg.width), mode="bilinear",
                             antialias=True, align_corners=False).clamp(0, 1)  # (b, 3, H, W)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        fakes.append(fake)
        reals.append(real)
        if colours is not None:
            requested += [colours[i] for i, _ in chunk]
        write_generated(fake, [f"{split.text_product_ids[j].item()}" for _, j in chunk], out_dir, "unpaired")
    metrics = fid.compute()
    fake_all, real_all = torch.cat(fakes), torch.cat(reals)
    if colours is not None:
        metrics["fig/fashiongen/queries/colour_acc"] = colour_accuracy_of(fake_all, requested, "generated")
        metrics["fig/fashiongen/real/colour_acc"] = colour_accuracy_of(real_all, requested, "real")
    if grid_path is not None:
        save_grid(real_all[:8], fake_all[:8], grid_path)
    return {prefix + k: v for k, v in metrics.items()}


def colour_accuracy_of(images: torch.Tensor, requested: list[str], what: str) -> float:
    """Colour accuracy (0-100) in which an image without foreground (uniform) counts as a miss (logged)."""
    from unifashion.data.synthetic.attributes import COLOURS
    from unifashion.tasks.fig.protocol import colour_accuracy, foreground_mask

    has_fg = [bool(foreground_mask(img.permute(1, 2, 0).numpy().astype("float64") * 255).any()) for img in images]
    if not any(has_fg):
        log.warning("colour accuracy: all %d %s images are uniform (no garment): 0%%", len(images), what)
        return 0.0
    if not all(has_fg):
        log.warning("colour accuracy: %d of %d %s images are uniform (no garment): counted as misses",
                    has_fg.count(False), len(images), what)
    keep = [i for i, ok in enumerate(has_fg) if ok]
    acc = colour_accuracy(images[keep], [requested[i] for i in keep], COLOURS)
    return acc * len(keep) / len(images)


def save_grid(top: torch.Tensor, bottom: torch.Tensor, path) -> Path:
    """A PNG with the conditions' images (top row) above the generated ones (bottom row)."""
    rows = torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)  # (3, 2H, nW)
    arr = (rows.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).resize((arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST).save(path)
    return path


def generate_fashiongen(model: UniFashion, data_root, out, sampler="dpmsolver++", steps=20, guidance_scale=None,
                        seed=1234, limit=None) -> dict[str, float]:
    """`unifashion generate --data`: images from the queries of FashionGen validation products, with
    their metrics and a grid (`out/grid.png`)."""
    return run_fig(model, data_root, out, max_items=limit, sampler=sampler, steps=steps,
                   guidance_scale=guidance_scale, seed=seed, grid_path=Path(out) / "grid.png")
