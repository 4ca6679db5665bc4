"""Try-on and design inference: a person, a garment or a sketch, and a text -> a generated person image.

UniFashion's try-on / design model (paper Figure 3, eq. 12): the Q-Former reads the garment (try-on) or the
sketch drawn as black strokes on white (design) together with the text, bi-directionally (`encoder.fuse`);
the image adapter maps its query outputs to the UNet's cross-attention condition; the UNet also sees the
agnostic person, the inpaint mask and, for design, the pose maps and the sketch (models/generator.py);
with `controlnet_copy` the UNet-encoder copy reads the garment or the sketch.

Inputs are what VITON-HD / MGD provide (DATASETS.md 4, 5): either the dataset's agnostic person
(``agnostic-v3.2``, used as it is) or a full person image (its inpaint region is set to mid grey, as the
agnostic images are), and the inpaint mask (``agnostic-mask``, white = region to generate). Each image
argument is one image (PIL image, path, or tensor (C, H, W)), a list of them, or a batched tensor
(B, C, H, W); tensors are RGB in [-1, 1] (masks and sketches in {0, 1}, 1 = region / stroke). Everything is
resized to the generator's `height` x `width`.

    from unifashion.models.tryon import tryon
    images = tryon(encoder, generator, agnostic="agnostic.jpg", mask="mask.png", garment="cloth.jpg",
                   text="red short-sleeve t-shirt")          # float (1, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from unifashion.data.transforms import ImageTransform
from unifashion.data.vitonhd import NUM_POSE_MAPS, sketch_strokes, to_signed
from unifashion.models.encoder import MultimodalEncoder
from unifashion.models.generator import Generator

SKETCH_THRESHOLD = 20
"""MGD's test-time sketch threshold (data/vitonhd.py `sketch_threshold_test`)."""


@dataclass
class TryOnInputs:
    """A batch of try-on / design inputs at the generator's resolution (what the VITON-HD loader yields)."""

    agnostic: Tensor
    """float (B, 3, H, W) in [-1, 1]: the person with the inpaint region greyed out."""
    inpaint_mask: Tensor
    """float (B, 1, H, W) in {0, 1}: 1 where the garment is generated."""
    image_clip: Tensor
    """float (B, 3, S, S), CLIP-normalised: what the Q-Former reads (the garment, or the sketch drawing)."""
    text: list[str]
    """The texts the Q-Former reads with `image_clip` (MGD captions joined with ", ", or "")."""
    cloth: Tensor | None = None
    """float (B, 3, H, W) in [-1, 1]: the in-shop garment (the control copy's input for try-on)."""
    sketch: Tensor | None = None
    """float (B, 1, H, W), strokes 1 (design)."""
    pose_map: Tensor | None = None
    """float (B, 18, H, W), COCO-18 heatmaps (design); zeros when not given."""

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> TryOnInputs:
        """The inputs of a VITON-HD batch (`data.vitonhd.VitonHDDataModule`, kind "tryon")."""
        return cls(agnostic=batch["agnostic"], inpaint_mask=batch["inpaint_mask"], image_clip=batch["image_clip"],
                   text=list(batch["text"]), cloth=batch.get("cloth"), sketch=batch.get("sketch"),
                   pose_map=batch.get("pose_map"))

    def conditions(self) -> dict[str, Tensor]:
        """The generator's spatial conditions (models/generator.py module docstring)."""
        out = {"agnostic": self.agnostic, "inpaint_mask": self.inpaint_mask}
        for key in ("cloth", "sketch", "pose_map"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@torch.no_grad()
def generate_tryon(
    encoder: MultimodalEncoder,
    generator: Generator,
    inputs: TryOnInputs,
    sampler: Literal["pndm", "dpmsolver++", "ddim"] = "dpmsolver++",
    steps: int = 20,
    guidance_scale: float | None = None,
    seed: int = 1234,
) -> Tensor:
    """Generate try-on / design results from prepared inputs.

    Args:
        encoder: the multimodal encoder (Q-Former), in eval mode.
        generator: a try-on or design generator (`variant` "tryon" / "design"), in eval mode.
        inputs: the batch (`TryOnInputs`); for design, `sketch` is required and a missing `pose_map` is zeros.
        sampler, steps, guidance_scale: as `Generator.sample` (paper: "pndm", 50 steps).
        seed: seed of the initial noise.

    Returns:
        float (B, 3, H, W) in [0, 1], on the generator's device.
    """
    variant = generator.config.variant
    if variant == "plain":
        raise ValueError("generate_tryon needs a try-on or design generator (variant 'tryon' / 'design'), got 'plain'")
    device = generator.unet.device
    tokens = encoder.tokenize(list(inputs.text))
    vision = encoder.encode_vision(inputs.image_clip.to(encoder.temp.device))  # (B, P, Hv)
    queries, _ = encoder.fuse(vision, tokens["input_ids"], tokens["attention_mask"])  # (B, Q, H)
    cond = {k: v.to(device) for k, v in inputs.conditions().items()}
    b, _, h, w = inputs.agnostic.shape
    if variant == "design":
        if "sketch" not in cond:
            raise ValueError("design needs a sketch")
        cond.setdefault("pose_map", torch.zeros(b, NUM_POSE_MAPS, h, w, device=device))
    return generator.sample(queries.to(device), cond, sampler=sampler, steps=steps, guidance_scale=guidance_scale,
                            generator=torch.Generator().manual_seed(seed), height=h, width=w)


# ---------------------------------------------------------------------------------------------- inputs
def _items(x: Any) -> list[Any]:
    if isinstance(x, Tensor):
        return list(x) if x.dim() == 4 else [x]
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _open(item: Any, what: str) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{what} image not found: {path}")
        with Image.open(path) as im:
            return im.copy()
    raise TypeError(f"{what}: expected a PIL image, a path or a tensor, got {type(item).__name__}")


def _rgb(item: Any, size: tuple[int, int], what: str) -> Tensor:
    """One RGB image -> float (3, H, W) in [-1, 1] at `size` = (H, W)."""
    if isinstance(item, Tensor):
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(f"{what} tensor must be (3, H, W) in [-1, 1], got {tuple(item.shape)}")
        x = item.float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
        return x
    im = _open(item, what).convert("RGB")
    return to_signed(im if im.size == size[::-1] else im.resize(size[::-1], Image.Resampling.BICUBIC))


def _binary(item: Any, size: tuple[int, int], what: str, sketch: bool = False) -> Tensor:
    """A mask (white = region, >= 128) or an MGD sketch (bright strokes, MGD threshold) -> (1, H, W) in {0, 1}."""
    if isinstance(item, Tensor):
        x = item.float()
        x = x[None] if x.dim() == 2 else x
        if x.dim() != 3 or x.shape[0] != 1:
            raise ValueError(f"{what} tensor must be (1, H, W) in {{0, 1}}, got {tuple(item.shape)}")
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        return (x >= 0.5).float()
    im = _open(item, what).convert("L")
    if sketch:
        return sketch_strokes(im.resize(size[::-1], Image.Resampling.BICUBIC), SKETCH_THRESHOLD)
    im = im.resize(size[::-1], Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(im) >= 128).float().unsqueeze(0)


def _clip_view(x: Tensor, transform: ImageTransform) -> Tensor:
    """float (3, H, W) in [-1, 1] -> the encoder's CLIP-normalised (3, S, S) view (target pad, resize)."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return transform(Image.fromarray(arr))


def prepare_tryon_inputs(
    generator: Generator,
    encoder_image_size: int,
    *,
    mask: Any,
    agnostic: Any = None,
    person: Any = None,
    garment: Any = None,
    sketch: Any = None,
    text: str | Sequence[str] = "",
    pose_map: Tensor | None = None,
) -> TryOnInputs:
    """Turn user inputs (module docstring) into `TryOnInputs` at the generator's resolution.

    Args:
        generator: the try-on / design generator (its `height`, `width`, `variant`).
        encoder_image_size: side S of the Q-Former's image input.
        mask: the inpaint mask(s), white / 1 = the region to generate.
        agnostic: the dataset's agnostic person image(s) (used as they are); or
        person: full person image(s) (the mask region is set to mid grey).
        garment: in-shop garment image(s); required for try-on.
        sketch: sketch(es), MGD files (bright strokes on black) or (1, H, W) tensors; required for design.
        text: one text per item (a single string is repeated).
        pose_map: float (B, 18, H, W) COCO-18 heatmaps for design (None: zeros).

    Raises:
        ValueError: for a missing input of the variant, or items that do not batch together.
    """
    cfg = generator.config
    size = (cfg.height, cfg.width)
    if (agnostic is None) == (person is None):
        raise ValueError("give exactly one of agnostic= (the agnostic person image) or person= (a full person image)")
    if cfg.variant == "tryon" and garment is None:
        raise ValueError("try-on needs garment= (the in-shop garment image)")
    if cfg.variant == "design" and sketch is None:
        raise ValueError("design needs sketch= (an MGD sketch: bright strokes on black, or a (1, H, W) tensor)")
    masks = torch.stack([_binary(m, size, "mask") for m in _items(mask)])  # (B, 1, H, W)
    base = torch.stack([_rgb(p, size, "agnostic" if agnostic is not None else "person")
                        for p in _items(agnostic if agnostic is not None else person)])  # (B, 3, H, W)
    b = base.shape[0]
    if masks.shape[0] != b:
        raise ValueError(f"{b} person images but {masks.shape[0]} masks")
    if person is not None:
        base = base * (1.0 - masks)  # the region to 0 = mid grey, as the agnostic images
    texts = [text] * b if isinstance(text, str) else list(text)
    if len(texts) != b:
        raise ValueError(f"{b} person images but {len(texts)} texts")
    transform = ImageTransform(encoder_image_size)
    cloth = sketches = None
    if garment is not None:
        cloth = torch.stack([_rgb(g, size, "garment") for g in _items(garment)])  # (B, 3, H, W)
        if cloth.shape[0] != b:
            raise ValueError(f"{b} person images but {cloth.shape[0]} garments")
    if sketch is not None:
        sketches = torch.stack([_binary(s, size, "sketch", sketch=True) for s in _items(sketch)])  # (B, 1, H, W)
        if sketches.shape[0] != b:
            raise ValueError(f"{b} person images but {sketches.shape[0]} sketches")
    if cfg.variant == "design":  # the Q-Former reads the sketch as black strokes on white (data/vitonhd.py)
        image_clip = torch.stack([_clip_view(1.0 - 2.0 * s.expand(3, -1, -1), transform) for s in sketches])
    else:
        image_clip = torch.stack([_clip_view(c, transform) for c in cloth])
    if pose_map is not None and tuple(pose_map.shape) != (b, NUM_POSE_MAPS, *size):
        raise ValueError(f"pose_map must be ({b}, {NUM_POSE_MAPS}, {size[0]}, {size[1]}), got {tuple(pose_map.shape)}")
    return TryOnInputs(agnostic=base, inpaint_mask=masks, image_clip=image_clip, text=texts, cloth=cloth,
                       sketch=sketches, pose_map=pose_map)


def tryon(
    encoder: MultimodalEncoder,
    generator: Generator,
    *,
    mask: Any,
    agnostic: Any = None,
    person: Any = None,
    garment: Any = None,
    sketch: Any = None,
    text: str | Sequence[str] = "",
    pose_map: Tensor | None = None,
    sampler: Literal["pndm", "dpmsolver++", "ddim"] = "dpmsolver++",
    steps: int = 20,
    guidance_scale: float | None = None,
    seed: int = 1234,
) -> Tensor:
    """Try-on (a garment) or design (a sketch) from user inputs: `prepare_tryon_inputs` + `generate_tryon`.

    Returns:
        float (B, 3, H, W) in [0, 1] on the CPU.
    """
    inputs = prepare_tryon_inputs(generator, encoder.config.image_size, mask=mask, agnostic=agnostic, person=person,
                                  garment=garment, sketch=sketch, text=text, pose_map=pose_map)
    was = (encoder.training, generator.training)
    encoder.eval()
    generator.eval()
    try:
        out = generate_tryon(encoder, generator, inputs, sampler=sampler, steps=steps,
                             guidance_scale=guidance_scale, seed=seed)
    finally:
        encoder.train(was[0])
        generator.train(was[1])
    return out.float().cpu()
