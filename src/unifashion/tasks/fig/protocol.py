"""Evaluation of generated images: FID / KID, CLIP-S, colour controllability, and the output layout.

- FID and KID (torchmetrics) use the standard FID Inception-v3 features (numbers comparable to the paper's
  Table 3) when a local weights file is given (`inception_weights=`, or the environment variable
  `UNIFASHION_INCEPTION_WEIGHTS`: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` or torch-fidelity's
  `weights-inception-2015-12-05-6726825d.pth`, loaded by `tasks/fig/inception.py`), or when torch-fidelity
  and its cached weights are installed; otherwise a deterministic, download-free proxy extractor
  (`ProxyImageFeatures`) and keys ending in `-proxy` (`fig/<dataset>/<setting>/FID-proxy`) so the two
  are never confused. KID is the raw value (papers often report x100 or x1000; DATASETS.md 6.5).
- Paired SSIM (torchmetrics `StructuralSimilarityIndexMeasure`, Gaussian 11 x 11, sigma 1.5, data range 1)
  between each paired try-on result and its real person image (`PairedSsim`).
- CLIP-S (torchmetrics `CLIPScore`) on a LOCAL CLIP directory, with an adapter for transformers 5 whose
  `get_image_features` / `get_text_features` return a model output (projected embedding in
  `pooler_output`) rather than a tensor.
- Colour controllability on the synthetic benchmark (no network): the dominant palette colour of the
  garment pixels.
- `write_generated` writes `<out>/{paired,unpaired}/<name>.jpg`; `evaluate_folder` scores such a folder.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.image.ssim import StructuralSimilarityIndexMeasure
from torchmetrics.multimodal.clip_score import CLIPScore

log = logging.getLogger(__name__)

SETTINGS = ("paired", "unpaired")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INCEPTION_FEATURES = 2048
INCEPTION_WEIGHTS_ENV = "UNIFASHION_INCEPTION_WEIGHTS"
"""Environment variable naming a local FID Inception weights file, used when no path is passed."""


# ---------------------------------------------------------------------------------------------- features
class ProxyImageFeatures(nn.Module):
    """A fixed, seeded, download-free image feature extractor for FID-proxy / KID-proxy.

    Features of an image resized to `size` x `size`: per-channel colour histograms (3 * `bins`), an 8x8
    average-pooled thumbnail (3 * 64) and a seeded Gaussian random projection of the resized pixels
    (`projections`). Not comparable to Inception FID; useful to compare runs with each other.

    Args:
        size: side of the resized image.
        bins: histogram bins per channel.
        projections: number of random projections.
        seed: seed of the projection matrix.

    Input: uint8 (B, 3, H, W) in [0, 255] or float (B, 3, H, W) in [0, 1]. Output: float (B, num_features).
    """

    def __init__(self, size: int = 32, bins: int = 8, projections: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.size, self.bins = size, bins
        g = torch.Generator().manual_seed(seed)
        d = 3 * size * size
        self.register_buffer("projection", torch.randn(projections, d, generator=g) / d**0.5)  # (P, 3*S*S)
        self.num_features = 3 * bins + 3 * 64 + projections

    def forward(self, imgs: Tensor) -> Tensor:
        if imgs.dim() != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(imgs.shape)}")
        x = imgs.float() / 255.0 if imgs.dtype == torch.uint8 else imgs.float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp(0, 1)  # (B, 3, S, S)
        idx = (x * self.bins).long().clamp(max=self.bins - 1).flatten(2)  # (B, 3, S*S)
        hist = F.one_hot(idx, self.bins).float().mean(2).flatten(1)  # (B, 3*bins)
        thumb = F.adaptive_avg_pool2d(x, 8).flatten(1)  # (B, 192)
        proj = (x.flatten(1) - 0.5) @ self.projection.T  # (B, P)
        return torch.cat([hist, thumb, proj], dim=1)


def build_feature_extractor(
    kind: Literal["auto", "inception", "proxy"] = "auto", inception_weights: str | Path | None = None
) -> tuple[int | nn.Module, bool]:
    """Pick the FID/KID feature extractor.

    Args:
        kind: "inception" requires Inception weights (a local file, or torch-fidelity with its cached
            weights); "proxy" always uses `ProxyImageFeatures`; "auto" uses Inception when available and
            falls back to the proxy with a logged warning.
        inception_weights: a local FID Inception state-dict file (`tasks/fig/inception.py`); None reads
            `UNIFASHION_INCEPTION_WEIGHTS`. A path that is given must exist (a typo is an error, not a proxy).

    Returns:
        (the `feature` argument for torchmetrics: a module or torch-fidelity's feature width, is_proxy).
    """
    if kind not in ("auto", "inception", "proxy"):
        raise ValueError(f"feature kind must be 'auto', 'inception' or 'proxy', got {kind!r}")
    if kind == "proxy":
        return ProxyImageFeatures(), True
    weights = inception_weights if inception_weights is not None else os.environ.get(INCEPTION_WEIGHTS_ENV) or None
    if weights is not None:
        from unifashion.tasks.fig.inception import load_fid_inception

        return load_fid_inception(weights), False  # raises naming the file when it is missing or wrong
    try:
        FrechetInceptionDistance(feature=INCEPTION_FEATURES)  # imports torch-fidelity, loads the weights
    except Exception as err:  # noqa: BLE001 - any failure (missing package, no weights offline) -> proxy
        if kind == "inception":
            raise RuntimeError(f"Inception FID features unavailable: give a local weights file (inception_weights= "
                               f"or ${INCEPTION_WEIGHTS_ENV}: pt_inception-2015-12-05-6726825d.pth) or install "
                               f"torch-fidelity with its weights ({err})") from err
        log.warning("Inception features unavailable (%s); using the proxy extractor: keys end in '-proxy' "
                    "(give a local weights file with $%s for the real FID/KID)", err, INCEPTION_WEIGHTS_ENV)
        return ProxyImageFeatures(), True
    return INCEPTION_FEATURES, False


class FidKid:
    """FID and KID between real and generated images, streamed batch by batch.

    Args:
        dataset: dataset name for the metric keys (e.g. "vitonhd").
        setting: protocol name for the keys (e.g. "unpaired").
        feature: "auto", "inception" or "proxy" (see `build_feature_extractor`), or an `nn.Module`
            returning (B, F) with a `num_features` attribute (treated as a proxy).
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (capped at the number of real / generated images).
        seed: seed of KID's subset sampling.
        inception_weights: local FID Inception weights file (see `build_feature_extractor`).
    """

    def __init__(self, dataset: str, setting: str, feature: str | nn.Module = "auto", kid_subsets: int = 100,
                 kid_subset_size: int = 1000, seed: int = 0, inception_weights: str | Path | None = None) -> None:
        if isinstance(feature, nn.Module):
            feat, self.is_proxy = feature, True
        else:
            feat, self.is_proxy = build_feature_extractor(feature, inception_weights)
        self.prefix = f"fig/{dataset}/{setting}"
        self.seed = seed
        self.kid_subset_size = kid_subset_size
        # torch-fidelity's Inception: float [0,1] -> uint8 inside torchmetrics; modules take float [0, 1]
        normalize = isinstance(feat, int)
        self.fid = FrechetInceptionDistance(feature=feat, normalize=normalize)
        with warnings.catch_warnings():  # "KID keeps every feature in memory": known and intended
            warnings.simplefilter("ignore", UserWarning)
            self.kid = KernelInceptionDistance(feature=feat, subsets=kid_subsets, subset_size=kid_subset_size,
                                               normalize=normalize)
        self.n_real = self.n_fake = 0

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of images, float (B, 3, H, W) in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float (B, 3, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}")
        self.fid.update(images, real=real)
        self.kid.update(images, real=real)
        if real:
            self.n_real += images.shape[0]
        else:
            self.n_fake += images.shape[0]

    def compute(self) -> dict[str, float]:
        """Return {"<prefix>/FID[-proxy]": ..., "<prefix>/KID[-proxy]": ...} (KID: raw mean over subsets)."""
        if self.n_real < 2 or self.n_fake < 2:
            raise ValueError(f"FID/KID need >= 2 real and >= 2 generated images, got {self.n_real} and {self.n_fake}")
        suffix = "-proxy" if self.is_proxy else ""
        self.kid.subset_size = min(self.kid_subset_size, self.n_real, self.n_fake)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid_mean, _ = self.kid.compute()
        return {f"{self.prefix}/FID{suffix}": float(self.fid.compute()), f"{self.prefix}/KID{suffix}": float(kid_mean)}


class PairedSsim:
    """Mean SSIM between generated images and their real counterparts (paired try-on), streamed.

    torchmetrics `StructuralSimilarityIndexMeasure` with its defaults (Gaussian kernel 11, sigma 1.5,
    k1 0.01, k2 0.03) and data range 1 on images in [0, 1]; the key is `fig/<dataset>/paired/SSIM`.
    """

    def __init__(self, dataset: str) -> None:
        self.key = f"fig/{dataset}/paired/SSIM"
        self.metric = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.n = 0

    def update(self, generated: Tensor, real: Tensor) -> None:
        """Add a batch: float (B, 3, H, W) in [0, 1] each, same shapes."""
        if generated.shape != real.shape or generated.dim() != 4:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must be the same "
                             "(B, 3, H, W)")
        self.metric.update(generated.float().clamp(0, 1), real.float().clamp(0, 1))
        self.n += generated.shape[0]

    def compute(self) -> dict[str, float]:
        if not self.n:
            raise ValueError("SSIM needs at least one image pair")
        return {self.key: float(self.metric.compute())}


# ---------------------------------------------------------------------------------------------- CLIP-S
def _embedding(out) -> Tensor:
    """transformers <5 returns the projected embedding; 5 returns an output whose pooler_output is it."""
    if isinstance(out, Tensor):
        return out
    if getattr(out, "pooler_output", None) is not None:
        return out.pooler_output
    raise TypeError(f"cannot find the projected embedding in a {type(out).__name__}")


class ClipFeatureAdapter(nn.Module):
    """Gives a transformers CLIPModel the tensor-returning feature API torchmetrics' CLIPScore calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: Tensor, **kwargs) -> Tensor:
        return _embedding(self.model.get_image_features(pixel_values=pixel_values, **kwargs))  # (B, E)

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs) -> Tensor:
        return _embedding(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                                       **kwargs))  # (B, E)


def load_local_clip(path: str | Path) -> tuple[ClipFeatureAdapter, Callable]:
    """Load a CLIP model, tokenizer and (PIL-backend) image processor from a local directory.

    Raises:
        FileNotFoundError: if `path` is not a directory holding `config.json` and `preprocessor_config.json`.
    """
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    p = Path(path).expanduser()
    for name in ("config.json", "preprocessor_config.json"):
        if not (p / name).is_file():
            raise FileNotFoundError(f"CLIP directory {p} lacks {name}: expected a saved CLIPModel + CLIPProcessor")
    model = CLIPModel.from_pretrained(p).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(p),
                              tokenizer=CLIPTokenizer.from_pretrained(p))
    return ClipFeatureAdapter(model), processor


def to_uint8(images: Tensor) -> Tensor:
    """float [0, 1] (B, 3, H, W) -> uint8 [0, 255]."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def clip_score_metric(clip_path: str | Path) -> CLIPScore:
    """torchmetrics CLIPScore on a local CLIP directory (score = max(100 * mean cos, 0)). Feed it uint8 images."""
    return CLIPScore(model_name_or_path=partial(load_local_clip, clip_path))


# ---------------------------------------------------------------------------------------------- colour
def _as_rgb_array(img) -> np.ndarray:
    """PIL image, HxWx3 uint8 array, or (3, H, W) float tensor in [0, 1] -> HxWx3 float array in [0, 255]."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"), dtype=np.float64)
    if isinstance(img, Tensor):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"tensor image must be (3, H, W), got {tuple(img.shape)}")
        arr = img.detach().cpu().float().permute(1, 2, 0).numpy()
        return arr.astype(np.float64) * (255.0 if img.is_floating_point() else 1.0)
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"array image must be (H, W, 3), got {arr.shape}")
    return arr


def foreground_mask(rgb: np.ndarray, tolerance: float = 30.0) -> np.ndarray:
    """Pixels differing from the background colour (median of the image border) by more than `tolerance`."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (N, 3)
    background = np.median(border, axis=0)
    return np.abs(rgb - background).max(axis=-1) > tolerance  # (H, W)


def dominant_colour(img, palette: Mapping[str, Sequence[int]], mask=None, tolerance: float = 30.0) -> str:
    """Name of the palette colour most of the garment pixels are nearest to.

    Args:
        img: PIL image, (H, W, 3) uint8 array or (3, H, W) float tensor in [0, 1].
        palette: colour name -> (R, G, B) in 0-255.
        mask: optional (H, W) boolean garment mask; by default, every pixel that differs from the
            border's median colour by more than `tolerance`.
        tolerance: background tolerance in 0-255 units.

    Raises:
        ValueError: if no foreground pixel is found or the palette is empty.
    """
    if not palette:
        raise ValueError("empty palette")
    rgb = _as_rgb_array(img)
    fg = foreground_mask(rgb, tolerance) if mask is None else np.asarray(mask, dtype=bool)
    if fg.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {fg.shape} != image shape {rgb.shape[:2]}")
    pixels = rgb[fg]  # (N, 3)
    if len(pixels) == 0:
        raise ValueError("no foreground pixels: the image is uniform (or the mask is empty)")
    names = list(palette)
    colours = np.asarray([palette[n] for n in names], dtype=np.float64)  # (K, 3)
    nearest = ((pixels[:, None, :] - colours[None]) ** 2).sum(-1).argmin(1)  # (N,)
    return names[int(np.bincount(nearest, minlength=len(names)).argmax())]


def colour_accuracy(images, requested_colours: Sequence[str], palette: Mapping[str, Sequence[int]],
                    masks=None) -> float:
    """Percentage (0-100) of images whose dominant colour is the requested one.

    Args:
        images: a sequence of images (see `dominant_colour`) or a float tensor (B, 3, H, W) in [0, 1].
        requested_colours: colour names, one per image, keys of `palette`.
        palette: colour name -> (R, G, B).
        masks: optional sequence of garment masks.
    """
    if len(images) != len(requested_colours):
        raise ValueError(f"{len(images)} images but {len(requested_colours)} requested colours")
    unknown = sorted(set(requested_colours) - set(palette))
    if unknown:
        raise ValueError(f"requested colours {unknown} are not in the palette {sorted(palette)}")
    if not len(images):
        raise ValueError("no images")
    hits = sum(dominant_colour(img, palette, None if masks is None else masks[i]) == want
               for i, (img, want) in enumerate(zip(images, requested_colours)))
    return 100.0 * hits / len(images)


# ---------------------------------------------------------------------------------------------- folders
def write_generated(images: Tensor, names: Sequence[str], out_dir: str | Path,
                    setting: Literal["paired", "unpaired"]) -> list[Path]:
    """Write images (B, 3, H, W) in [0, 1] as `<out_dir>/<setting>/<name>.jpg` (DATASETS.md 4.4).

    `name` is the output stem (person stem, or `<person>_<cloth>` for unpaired try-on); a trailing image
    suffix is dropped.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if len(images) != len(names):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    folder = Path(out_dir) / setting
    folder.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    paths = []
    for a, name in zip(arr, names):
        stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
        path = folder / f"{stem}.jpg"
        Image.fromarray(a).save(path, quality=95)
        paths.append(path)
    return paths


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {IMAGE_SUFFIXES} images in {folder}")
    return files


def _load_batch(files: Sequence[Path], size: tuple[int, int]) -> Tensor:
    """Load images as float (B, 3, H, W) in [0, 1], resized (bicubic) to size = (H, W)."""
    out = []
    for f in files:
        try:
            im = Image.open(f).convert("RGB")
        except OSError as err:
            raise OSError(f"cannot read image {f}: {err}") from err
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


def evaluate_folder(
    generated_dir: str | Path,
    real_dir: str | Path,
    dataset: str,
    setting: Literal["paired", "unpaired"] = "unpaired",
    feature: str | nn.Module = "auto",
    clip_path: str | Path | None = None,
    captions: Mapping[str, str] | None = None,
    batch_size: int = 32,
    kid_subset_size: int = 1000,
    metrics_file: str | Path | None = None,
    inception_weights: str | Path | None = None,
) -> dict[str, float]:
    """FID/KID (and CLIP-S when a CLIP path and captions are given) of `<generated_dir>/<setting>/`.

    Args:
        generated_dir: the `out_dir` given to `write_generated`.
        real_dir: folder of real images (e.g. VITON-HD `test/image/`); resized to the generated size.
        dataset: dataset name for the keys.
        setting: "paired" or "unpaired".
        feature: FID/KID feature extractor (see `FidKid`).
        clip_path: local CLIP directory; None skips CLIP-S with a logged message.
        captions: generated-file stem -> text, for CLIP-S (every generated image needs one).
        batch_size: images per batch.
        kid_subset_size: KID subset size.
        metrics_file: optional JSON file to merge the metrics into.
        inception_weights: local FID Inception weights file (see `build_feature_extractor`).

    Returns:
        flat metric dict, e.g. {"fig/vitonhd/unpaired/FID": ..., ".../KID": ..., ".../CLIP-S": ...}.
    """
    gen_files = _image_files(Path(generated_dir) / setting)
    real_files = _image_files(Path(real_dir))
    with Image.open(gen_files[0]) as first:
        size = (first.height, first.width)
    fidkid = FidKid(dataset, setting, feature=feature, kid_subset_size=kid_subset_size,
                    inception_weights=inception_weights)
    for i in range(0, len(real_files), batch_size):
        fidkid.update(_load_batch(real_files[i: i + batch_size], size), real=True)
    clip = None
    if clip_path is None:
        log.info("CLIP-S skipped: no CLIP model path given")
    elif captions is None:
        raise ValueError("CLIP-S needs captions (generated file stem -> text) along with clip_path")
    else:
        clip = clip_score_metric(clip_path)
    for i in range(0, len(gen_files), batch_size):
        files = gen_files[i: i + batch_size]
        batch = _load_batch(files, size)
        fidkid.update(batch, real=False)
        if clip is not None:
            missing = [f.stem for f in files if f.stem not in captions]
            if missing:
                raise KeyError(f"no caption for generated images {missing[:5]} in {Path(generated_dir) / setting}")
            clip.update(list(to_uint8(batch)), [captions[f.stem] for f in files])
    metrics = fidkid.compute()
    if clip is not None:
        metrics[f"fig/{dataset}/{setting}/CLIP-S"] = float(clip.compute())
    if metrics_file is not None:
        path = Path(metrics_file)
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**old, **metrics}, indent=2, sort_keys=True))
    return metrics
