"""PIL image transforms (no torchvision): CLIP4Cir/SPRC "target pad", bicubic resize, centre crop.

`ImageTransform` reproduces CLIP4Cir's ``targetpad_transform(target_ratio, dim)`` (used by SPRC and
UniFashion with ratio 1.25 at 224 px, ANCHORS.md):

1. TargetPad: with ``r = max(w, h) / min(w, h)``, an image with ``r < target_ratio`` is left as it
   is. Otherwise the short side is zero-padded (black) symmetrically by
   ``p = max(int((max(w, h) / target_ratio - short) / 2), 0)`` pixels on each side, so the aspect
   ratio becomes about ``target_ratio`` (it is *not* padded to a square).
2. Resize the short side to ``size`` with bicubic interpolation; the long side becomes
   ``int(size * long / short)`` (torchvision's truncation).
3. Centre crop ``size x size`` (offset ``int(round((L - size) / 2))``).
4. To float in [0, 1], then normalise with the CLIP mean/std.

One documented difference: the image is converted to RGB *before* padding (CLIP4Cir converts after),
which only matters for palette images whose index 0 is not black.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def target_pad(image: Image.Image, target_ratio: float) -> Image.Image:
    """CLIP4Cir's TargetPad: pad the short side when the aspect ratio is >= `target_ratio`."""
    w, h = image.size
    if max(w, h) / min(w, h) < target_ratio:
        return image
    scaled_max_wh = max(w, h) / target_ratio
    hp = max(int((scaled_max_wh - w) / 2), 0)
    vp = max(int((scaled_max_wh - h) / 2), 0)
    if hp == 0 and vp == 0:
        return image
    return ImageOps.expand(image, border=(hp, vp, hp, vp), fill=0)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the short side is `size` (long side truncated as torchvision does)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central `size` x `size` square (the image must be at least that large)."""
    w, h = image.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    w, h = image.size
    return data.view(h, w, 3).permute(2, 0, 1).float().div(255.0)  # (3, H, W)


class ImageTransform:
    """PIL image -> CLIP-normalised float tensor (3, size, size) (see module docstring).

    Args:
        size: output side length in pixels.
        target_pad_ratio: aspect ratio at and above which the short side is padded (1.25 in
            CLIP4Cir/SPRC/UniFashion). Use a huge value to disable padding.
        mean: per-channel normalisation mean (CLIP's by default).
        std: per-channel normalisation std (CLIP's by default).
        augment: random horizontal flip (p = 0.5, torch RNG, so seeded per DataLoader worker).
    """

    def __init__(
        self,
        size: int = 224,
        target_pad_ratio: float = 1.25,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        augment: bool = False,
    ):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if target_pad_ratio < 1.0:
            raise ValueError(f"target_pad_ratio must be >= 1, got {target_pad_ratio}")
        self.size = size
        self.target_pad_ratio = target_pad_ratio
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        image = target_pad(image, self.target_pad_ratio)
        image = resize_short_side(image, self.size)
        image = center_crop(image, self.size)
        if self.augment and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = pil_to_tensor(image)  # (3, S, S)
        return (x - self.mean) / self.std


def denormalize(
    x: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """Undo the normalisation of `ImageTransform`: (..., 3, H, W) -> values clamped to [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


def fit_image(image: Image.Image, size: tuple[int, int], mode: str = "pad") -> Image.Image:
    """Resize an image to `size` = (H, W) keeping its aspect ratio (bicubic, antialiased by PIL).

    The diffusion target of the generator (DATASETS.md: FashionGen's 256 x 256 originals, VITON-HD's
    1024 x 768) is made with this function from the dataset's own image, never from the encoder's view.

    Args:
        image: the original image.
        size: (height, width) of the output.
        mode: "pad" scales the image to fit inside `size` and pads the rest with the median colour of
            the image border (product shots: nothing of the garment is cut); "crop" scales it to cover
            `size` and crops the centre. Equal aspect ratios make both a plain resize.

    Raises:
        ValueError: for an unknown mode or a non-positive size.
    """
    if mode not in ("pad", "crop"):
        raise ValueError(f"fit_image mode must be 'pad' or 'crop', got {mode!r}")
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) == (width, height):
        return image
    scale = (min if mode == "pad" else max)(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if (new_w, new_h) == (width, height):
        return resized
    if mode == "crop":
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    border = torch.cat([pil_to_tensor(resized)[:, [0, -1], :].flatten(1),
                        pil_to_tensor(resized)[:, :, [0, -1]].flatten(1)], dim=1)  # (3, N)
    fill = tuple(int(round(v * 255)) for v in border.median(dim=1).values.tolist())
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas
