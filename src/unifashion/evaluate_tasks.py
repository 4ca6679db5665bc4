"""Captioning (FIC) and generation (FIG) evaluations of a UniFashionModule, and the caption /
generate commands. Protocols: DATASETS.md 6.2 (captioning), 6.5-6.6 (generation)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unifashion.data.transforms import ImageTransform, denormalize
from unifashion.eval.caption_attributes import SIDECAR, attribute_accuracy, read_product_attributes
from unifashion.eval.captioning import caption_metrics, metric_keys

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _fashiongen_split(model, data_root):
    from unifashion.commands import fashiongen_datamodule

    dm = fashiongen_datamodule(data_root, model.encoder.config.image_size)
    return dm.retrieval_split("validation")


def first_image_per_product(split, max_items: int | None = None) -> list[tuple[int, int]]:
    """(image index, text index) of the first image of each product, in text order."""
    first: dict[int, int] = {}
    for i, pid in enumerate(split.image_product_ids.tolist()):
        first.setdefault(pid, i)
    pairs = [(first[pid], j) for j, pid in enumerate(split.text_product_ids.tolist())]
    return pairs[:max_items] if max_items else pairs


@torch.no_grad()
def _queries(model, pixels: torch.Tensor) -> torch.Tensor:
    return model.encoder.encode_image(pixels.to(model.device)).query_output  # (B, Q, H)


@torch.no_grad()
def caption_split(model, split, pairs, style: str = "fashiongen", batch_size: int = 32, **gen_kwargs):
    """Captions of the images `pairs` (image index, text index) of a split -> {text index: caption}."""
    out: dict[int, str] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pixels = torch.stack([split.images[i]["image"] for i, _ in chunk])  # (b, 3, S, S)
        captions = model.captioner.generate(_queries(model, pixels), [style] * len(chunk), **gen_kwargs)
        out.update({j: c for (_, j), c in zip(chunk, captions)})
    return out


def run_fic(model, data_root, *, prefix: str = "", max_items: int | None = None, num_beams: int = 1,
            max_new_tokens: int = 48, metrics=None, examples: list | None = None,
            batch_size: int = 100) -> dict[str, float]:
    """FashionGen captioning metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr x 100).

    One caption per product, generated from its first validation image; the reference is the
    product's description (one reference per product, DATASETS.md 6.2; references in the `gts`
    slot, predictions in `res`).

    Args:
        model: a UniFashionModule with a captioner.
        data_root: the synthetic root (with fashiongen/) or a FashionGen root.
        prefix: prepended to every metric key (e.g. "baseline/").
        max_items: caption only the first this many validation products (None: all).
        num_beams: beam width (1: greedy).
        max_new_tokens: longest generated caption in tokens.
        metrics: subset of `eval.captioning.METRICS` (None: all; METEOR starts a JVM).
        examples: when given, receives the (prediction, reference) pairs in product order.
        batch_size: images captioned per `generate` call.

    Returns:
        ``{prefix + "fic/fashiongen/<metric>": value}``; on synthetic data (a sidecar
        ``attributes.jsonl`` beside the HDF5 files) also ``fic/fashiongen/attributes/<name>``, the
        percent of products whose caption names the right primary colour, pattern, sleeve and
        garment (`eval.caption_attributes`).
    """
    if model.captioner is None:
        raise ValueError("this model has no captioner (train phase1_captioning or phase1_generative)")
    split = _fashiongen_split(model, data_root)
    pairs = first_image_per_product(split, max_items)
    was_training = model.training
    model.eval()
    try:
        preds = caption_split(model, split, pairs, "fashiongen", batch_size=batch_size, num_beams=num_beams,
                              max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
    refs = {j: [split.texts[j]] for _, j in pairs}
    kwargs = {"metrics": metrics} if metrics else {}
    scores = caption_metrics(preds, refs, **kwargs)
    from unifashion.commands import fashiongen_root

    sidecar = fashiongen_root(data_root) / SIDECAR
    if sidecar.is_file():  # synthetic data: do the captions name the right attributes?
        truth = read_product_attributes(sidecar, "validation")
        by_product = {int(split.text_product_ids[j]): preds[j] for _, j in pairs}
        scores |= {f"attributes/{k}": v for k, v in attribute_accuracy(by_product, truth).items()}
    if examples is not None:
        examples.extend((preds[j], split.texts[j]) for _, j in pairs)
    return {prefix + k: v for k, v in metric_keys("fashiongen", scores).items()}


def caption_images(model, images_dir=None, data_root=None, style="fashiongen", num_beams=1, max_new_tokens=48,
                   batch_size=32) -> dict[str, str]:
    """Captions for every image of a folder (file name -> caption) or of FashionGen validation."""
    if model.captioner is None:
        raise ValueError("this checkpoint has no captioner (train phase1_captioning or phase1_generative)")
    model.eval()
    gen = {"num_beams": num_beams, "max_new_tokens": max_new_tokens}
    if data_root is not None:
        split = _fashiongen_split(model, data_root)
        pairs = first_image_per_product(split)
        caps = caption_split(model, split, pairs, style, batch_size, **gen)
        return {str(split.text_product_ids[j].item()): c for j, c in caps.items()}
    folder = Path(images_dir)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    transform = ImageTransform(size=model.encoder.config.image_size)
    out: dict[str, str] = {}
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        pixels = torch.stack([transform(Image.open(f).convert("RGB")) for f in chunk])
        with torch.no_grad():
            caps = model.captioner.generate(_queries(model, pixels), [style] * len(chunk), **gen)
        out.update({f.name: c for f, c in zip(chunk, caps)})
    return out


def _primary_colours(data_root) -> dict[int, str] | None:
    """Validation row -> requested primary colour, from the synthetic benchmark's attribute sidecar."""
    root = Path(data_root)
    sidecar = next((p for p in (root / "fashiongen" / "attributes.jsonl", root / "attributes.jsonl") if p.is_file()),
                   None)
    if sidecar is None:
        return None
    colours: dict[int, str] = {}
    with open(sidecar, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["split"] == "validation":
                colours[int(rec["image"].rsplit("#", 1)[1])] = rec["garment"]["primary_colour"]
    return colours


@torch.no_grad()
def generate_from_queries(model, pixels: torch.Tensor, sampler="dpmsolver++", steps=20, guidance_scale=None,
                          seed=1234) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] generated from the queries of `pixels` (phase-1 q2I)."""
    g = torch.Generator().manual_seed(seed)
    return model.generator.sample(_queries(model, pixels), sampler=sampler, steps=steps,
                                  guidance_scale=guidance_scale, generator=g).float().cpu()


def run_fig(model, data_root, out_dir, *, prefix: str = "", max_items: int | None = 64, sampler="dpmsolver++",
            steps: int = 20, guidance_scale=None, seed: int = 1234, batch_size: int = 16,
            grid_path=None) -> dict[str, float]:
    """FashionGen generation from queries: FID/KID (proxy features unless Inception is available) of
    generated vs real validation images and, on the synthetic benchmark, the colour accuracy against
    the attribute ground truth. Writes the images to `out_dir/unpaired/` and an optional PNG grid."""
    was_training = model.training
    model.eval()
    try:
        return _run_fig(model, data_root, out_dir, prefix, max_items, sampler, steps, guidance_scale, seed,
                        batch_size, grid_path)
    finally:
        model.train(was_training)  # a later fit must not train in eval mode (no CFG dropout)


def _run_fig(model, data_root, out_dir, prefix, max_items, sampler, steps, guidance_scale, seed, batch_size,
             grid_path) -> dict[str, float]:
    from unifashion.eval.generation import FidKid, write_generated

    split = _fashiongen_split(model, data_root)
    pairs = first_image_per_product(split, max_items)
    cfg = model.generator.config
    fid = FidKid("fashiongen", "queries", kid_subset_size=max(2, min(100, len(pairs))))
    colours = _primary_colours(data_root)
    fakes, reals, requested = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pixels = torch.stack([split.images[i]["image"] for i, _ in chunk])  # (b, 3, S, S)
        fake = generate_from_queries(model, pixels, sampler, steps, guidance_scale, seed + start)
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
        metrics["fig/fashiongen/queries/colour_acc"] = _colour_accuracy(fake_all, requested, "generated")
        metrics["fig/fashiongen/real/colour_acc"] = _colour_accuracy(real_all, requested, "real")
    if grid_path is not None:
        save_grid(real_all[:8], fake_all[:8], grid_path)
    return {prefix + k: v for k, v in metrics.items()}


def _colour_accuracy(images: torch.Tensor, requested: list[str], what: str) -> float:
    """Colour accuracy (0-100) in which an image without foreground (uniform) counts as a miss (logged)."""
    from unifashion.data.synthetic.attributes import COLOURS
    from unifashion.eval.generation import colour_accuracy, foreground_mask

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


def generate_images(model, data_root, out, sampler="dpmsolver++", steps=20, guidance_scale=None, seed=1234,
                    limit=None) -> int:
    """`unifashion generate`: images from the queries of FashionGen validation products."""
    if model.generator is None:
        raise ValueError("this checkpoint has no generator (train phase1_image_generation or phase1_generative)")
    metrics = run_fig(model, data_root, out, max_items=limit, sampler=sampler, steps=steps,
                      guidance_scale=guidance_scale, seed=seed, grid_path=Path(out) / "grid.png")
    print(json.dumps(metrics, indent=1))
    return len(list((Path(out) / "unpaired").glob("*.jpg")))
