"""VITON-HD try-on and MGD multimodal garment design from the official layouts (DATASETS.md 4, 5.1, 5.3).

Layout (`root` = the unzipped ``zalando-hd-resized`` folder, plus MGD's additions)::

    train_pairs.txt, test_pairs.txt     "<person>.jpg <cloth>.jpg" per line (test_pairs.txt is unpaired)
    captions.json                       MGD: {"<5-digit id>": [3 noun chunks], ...}   (with_captions)
    {train,test}/image/<p>.jpg                        person, RGB
    {train,test}/cloth/<c>.jpg                        in-shop garment, RGB
    {train,test}/cloth-mask/<c>.jpg                   garment mask, binarised with >= 128
    {train,test}/image-parse-v3/<p stem>.png          CIHP labels 0..19, mode P (mask_source "parse")
    {train,test}/agnostic-v3.2/<p>.jpg                person with the try-on region greyed (agnostic "file")
    {train,test}/agnostic-mask/<p stem>_mask.png      try-on region, white (optional, mask_source "file")
    {train,test}/openpose_json/<p stem>_keypoints.json   OpenPose BODY_25
    {train,test}/im_sketch/<p stem>.png               MGD paired sketch, bright strokes on black
    {train,test}/im_sketch_unpaired/<p stem>_<c stem>.png   MGD unpaired sketch

Pairs: training is paired only (column 2 is ignored, the cloth is the person's own, same file name).
At test, ``mode="paired"`` ignores column 2 as well; ``mode="unpaired"`` uses the cloth of column 2.

Per item (output size H x W, 512 x 384 by default; keep 4:3 and multiples of 8 for the VAE):

- ``image``, ``cloth``, ``agnostic``: bicubic resize, ``x / 127.5 - 1`` -> [-1, 1], (3, H, W).
- ``cloth_mask``: bilinear resize, ``>= 128`` -> {0, 1}, (1, H, W).
- ``inpaint_mask`` (1, H, W), 1 where the garment is generated. From ``agnostic-mask`` (white = region,
  as StableVITON reads it before inverting) when that folder exists (``mask_source="auto"``), else
  derived from the parse map (``"parse"``), a simplification of MGD's bounding-box mask: the bounding
  box of the garment and arm labels {5 upper-clothes, 6 dress, 7 coat, 14 left arm, 15 right arm},
  grown by ``mask_dilation`` output pixels on every side (clipped to the image), minus MGD's fixed
  labels {1 hat, 2 hair, 4 sunglasses, 13 face, 9 pants, 12 skirt, 18/19 shoes}. No garment or arm
  pixel -> an all-zero mask. MGD's extra arm polyline drawn from the keypoints is not reproduced.
- ``agnostic``: ``agnostic-v3.2`` when that folder exists (``agnostic_source="auto"``), else the
  person with the inpaint region set to 0 (mid grey, like the official agnostic images). The try-on
  and design models use it as the masked person as it is (StableVITON practice), with ``inpaint_mask``
  from ``agnostic-mask``; ``mask_source="file"`` and ``agnostic_source="file"`` require both folders.
- ``pose_map`` (18, H, W): COCO-18 Gaussian heatmaps from OpenPose BODY_25 (``people[0]``) with MGD's
  mapping (COCO i <- BODY_25 i for i <= 7, then BODY_25 i + 1, MidHip skipped). Keypoints are scaled
  from the person image's own size (or ``keypoint_source_size``) to H x W (for the official
  1024 x 768 release: x * W / 768, y * H / 1024). Map = exp(-((u - x)^2 + (v - y)^2) / sigma^2) on
  integer pixel centres, divided by its maximum (MGD ``kpoint_to_heatmap``, sigma 9 at 512 x 384).
  A joint with x <= 0 and y <= 0 (OpenPose's (0, 0) for "not found") gives an all-zero map; a file
  with no detected person gives 18 zero maps.
- ``sketch`` (1, H, W): MGD's rule: bicubic resize, invert, ``p > t -> 255 else 0``, to [0, 1],
  ``1 - x``; so a pixel becomes a stroke (1) iff its original value is >= 255 - t. ``t`` is drawn
  uniformly from ``sketch_threshold_train`` (inclusive) per training item, ``sketch_threshold_test``
  otherwise. Paired: ``im_sketch/<p stem>.png``; unpaired: ``im_sketch_unpaired/<p stem>_<c stem>.png``.
  Without sketches (``with_sketches=False``) the sketch is all zeros and no sketch file is read.
  ``sketch_dilate=True`` (tiny CPU demos, not MGD) first grows the strokes with a max filter as wide as
  the downscale factor (odd), so that 1-3 px strokes survive a 256 -> 32 px resize and the threshold.
- ``text``: the MGD captions of the lookup id joined with ``", "`` (shuffled first at training).
  Lookup id: the part of the file name before ``_``: the person's in paired mode (and at training),
  the cloth's (column 2) in unpaired mode. Ids with fewer than 3 captions are dropped (MGD's filter);
  the dropped ids and the pairs left out because of them are counted and logged
  (`caption_filter_counts`). An id absent from ``captions.json`` is a bad sample ("missing_key").
  Without captions (``with_captions=False``) the text is "" and ``captions.json`` is not read.
- ``image_clip`` (3, S, S): the encoder input for the Q-Former: the cloth (``encoder_input="cloth"``,
  try-on) or the sketch rendered as black strokes on white (``"sketch"``, design), through the same
  CLIP4Cir target-pad + CLIP normalisation as every other dataset, S = ``encoder_image_size``.
- ``person_id``, ``cloth_id``: file stems (``"00001_00"``); results are saved as
  ``<person_id>_<cloth_id>.jpg`` (StableVITON/UniFashion) or matched to ``test/image/<person_id>.jpg``.

Every referenced file is checked at `setup` (one directory listing per folder): a missing one raises a
`BadSampleError` naming it, or under ``on_bad_sample="skip"`` the pair is left out and counted. Files
that fail to decode are found when read; the item is dropped from its batch and counted.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from unifashion.data.base import BaseDataModule
from unifashion.data.batch import TRYON  # the batch kind of try-on / design batches
from unifashion.data.collate import Collate
from unifashion.data.errors import BadSampleError, OnBadSample
from unifashion.data.files import load_image, read_json, read_lines, require_dir
from unifashion.data.transforms import ImageTransform

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
NUM_POSE_MAPS = 18

BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
"""COCO-18 joint i is BODY_25 joint ``BODY25_TO_COCO18[i]`` (MGD ``src/utils/posemap.py``)."""

GARMENT_AND_ARM_LABELS = (5, 6, 7, 14, 15)
"""Parse labels whose bounding box is the derived inpaint region (upper clothes, dress, coat, arms)."""

FIXED_LABELS = (1, 2, 4, 13, 9, 12, 18, 19)
"""Parse labels never inpainted (MGD: head 1, 2, 4, 13; lower body 9, 12; shoes 18, 19)."""

MIN_CAPTIONS = 3

SourceMode = Literal["auto", "file", "parse", "derive"]


# ------------------------------------------------------------------ pure helpers

def split_caption_key(file_name: str) -> str:
    """The caption id of an image file: the name before the first ``_`` ("03195_00.jpg" -> "03195")."""
    return file_name.split("_")[0]


def filter_captions(
    data: dict[str, Any], min_captions: int = MIN_CAPTIONS
) -> tuple[dict[str, list[str]], list[str]]:
    """MGD's caption filter: keep ids with at least `min_captions` captions.

    Returns:
        (kept {id: captions}, sorted ids dropped for having too few captions).
    """
    kept: dict[str, list[str]] = {}
    dropped: list[str] = []
    for key, caps in data.items():
        if len(caps) >= min_captions:
            kept[key] = list(caps)
        else:
            dropped.append(key)
    return kept, sorted(dropped)


def coco18_from_body25(body25: torch.Tensor) -> torch.Tensor:
    """(25, C) BODY_25 keypoints -> (18, C) COCO-18 keypoints (`BODY25_TO_COCO18`)."""
    if body25.shape[0] != 25:
        raise ValueError(f"expected 25 BODY_25 keypoints, got {body25.shape[0]}")
    return body25[list(BODY25_TO_COCO18)]  # (18, C)


def pose_heatmaps(points: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Gaussian heatmaps exp(-d^2 / sigma^2), each divided by its maximum (MGD ``kpoint_to_heatmap``).

    Args:
        points: (J, 2) keypoints (x, y) in output pixels; a joint with x <= 0 and y <= 0 is missing.
        height: map height H.
        width: map width W.
        sigma: Gaussian width in output pixels.

    Returns:
        float (J, H, W); all-zero maps for missing joints.
    """
    x = points[:, 0:1].float()  # (J, 1)
    y = points[:, 1:2].float()  # (J, 1)
    gx = torch.exp(-((torch.arange(width, dtype=torch.float32) - x) ** 2) / sigma**2)  # (J, W)
    gy = torch.exp(-((torch.arange(height, dtype=torch.float32) - y) ** 2) / sigma**2)  # (J, H)
    maps = gy[:, :, None] * gx[:, None, :]  # (J, H, W); separable Gaussian
    peak = gy.amax(dim=1) * gx.amax(dim=1)  # (J,)
    maps = maps / (peak + float(np.finfo(np.float32).eps))[:, None, None]
    present = (points > 0).any(dim=1)  # (J,)
    return maps * present[:, None, None].float()  # (J, H, W)


def parse_inpaint_mask(parse: torch.Tensor, dilation: int) -> torch.Tensor:
    """The inpaint mask derived from a parse map (module docstring).

    Args:
        parse: long (H, W) CIHP labels.
        dilation: pixels added to every side of the garment + arms bounding box.

    Returns:
        float (1, H, W) in {0, 1}.
    """
    h, w = parse.shape
    region = torch.isin(parse, torch.tensor(GARMENT_AND_ARM_LABELS))  # (H, W)
    mask = torch.zeros(h, w, dtype=torch.bool)
    if region.any():
        rows = torch.nonzero(region.any(dim=1)).flatten()
        cols = torch.nonzero(region.any(dim=0)).flatten()
        y0, y1 = max(int(rows[0]) - dilation, 0), min(int(rows[-1]) + dilation, h - 1)
        x0, x1 = max(int(cols[0]) - dilation, 0), min(int(cols[-1]) + dilation, w - 1)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        mask &= ~torch.isin(parse, torch.tensor(FIXED_LABELS))
    return mask.float().unsqueeze(0)  # (1, H, W)


def sketch_strokes(sketch: Image.Image, threshold: int) -> torch.Tensor:
    """MGD's sketch rule: invert, ``p > t -> 255 else 0``, to [0, 1], ``1 - x`` (strokes -> 1).

    Args:
        sketch: mode-L sketch (bright strokes on black), already at the output size.
        threshold: t in 0..255.

    Returns:
        float (1, H, W) in {0, 1}.
    """
    inverted = np.asarray(ImageOps.invert(sketch.convert("L")), dtype=np.int32)  # (H, W)
    binary = np.where(inverted > threshold, 255, 0).astype(np.float32) / 255.0
    return torch.from_numpy(1.0 - binary).unsqueeze(0)  # (1, H, W)


def to_signed(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (3, H, W) in [-1, 1] (``x / 127.5 - 1``)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()  # (3, H, W)


def open_single_channel(path: Path, what: str) -> Image.Image:
    """Open a mask / label map / sketch and keep its single channel (mode P or L; RGB -> L).

    Raises:
        BadSampleError: "missing_file" or "corrupt_image" naming `path` and `what`.
    """
    if not path.is_file():
        raise BadSampleError(path, "missing_file", f"file not found; expected {what}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                return im.copy()
            return im.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadSampleError(path, "corrupt_image", f"cannot decode {what} ({e})") from e


def read_body25(path: Path) -> torch.Tensor:
    """OpenPose ``people[0].pose_keypoints_2d`` -> float (25, 3) (x, y, confidence); zeros if no person.

    Raises:
        BadSampleError: "missing_file" / "malformed_json" naming `path`.
    """
    data = read_json(path, dict, 'an OpenPose JSON object {"people": [{"pose_keypoints_2d": 75 floats}]}')
    people = data.get("people")
    if not isinstance(people, list):
        raise BadSampleError(path, "malformed_json", "no 'people' list")
    if not people:
        return torch.zeros(25, 3)
    kp = people[0].get("pose_keypoints_2d") if isinstance(people[0], dict) else None
    if not isinstance(kp, list) or len(kp) != 75 or not all(isinstance(v, (int, float)) for v in kp):
        raise BadSampleError(path, "malformed_json",
                             "people[0].pose_keypoints_2d must be 75 numbers (BODY_25)")
    return torch.tensor(kp, dtype=torch.float32).view(25, 3)


# ------------------------------------------------------------------ dataset

@dataclass(frozen=True)
class TryOnPair:
    """One pair of a pair file.

    person: person image file name ("00001_00.jpg"). cloth: cloth file name (the person's own in
    paired mode). caption_key: the captions.json id of the text.
    """

    person: str
    cloth: str
    caption_key: str

    @property
    def person_stem(self) -> str:
        return Path(self.person).stem

    @property
    def cloth_stem(self) -> str:
        return Path(self.cloth).stem


@dataclass(frozen=True)
class TryOnSettings:
    """How a split's items are built (filled by `VitonHDDataModule`; see the module docstring).

    split_dir: ``<root>/<split>``. height/width: output size. unpaired: read unpaired sketches.
    train: random sketch threshold and caption order. pose_sigma: heatmap width (output px).
    keypoint_source_size: (H, W) of the OpenPose pixel space, None for the person image's size.
    sketch_threshold: (low, high) inclusive range (train) or (t, t). mask_from_file: read
    ``agnostic-mask`` (else derive from the parse map). agnostic_from_file: read ``agnostic-v3.2``
    (else mask the person). mask_dilation: bounding-box growth in output px. with_sketches: read
    sketches. encoder_input: "cloth" or "sketch" for ``image_clip``. sketch_dilate: grow the strokes
    by the downscale factor before resizing (tiny demos).
    """

    split_dir: Path
    height: int
    width: int
    unpaired: bool
    train: bool
    pose_sigma: float
    keypoint_source_size: tuple[int, int] | None
    sketch_threshold: tuple[int, int]
    mask_from_file: bool
    agnostic_from_file: bool
    mask_dilation: int
    with_sketches: bool
    encoder_input: str
    sketch_dilate: bool = False

    def files(self, pair: TryOnPair) -> dict[str, Path]:
        """Every file an item reads, by role."""
        d = self.split_dir
        out = {
            "image": d / "image" / pair.person,
            "cloth": d / "cloth" / pair.cloth,
            "cloth_mask": d / "cloth-mask" / pair.cloth,
            "pose": d / "openpose_json" / f"{pair.person_stem}_keypoints.json",
        }
        if self.mask_from_file:
            out["inpaint_mask"] = d / "agnostic-mask" / f"{pair.person_stem}_mask.png"
        else:
            out["parse"] = d / "image-parse-v3" / f"{pair.person_stem}.png"
        if self.agnostic_from_file:
            out["agnostic"] = d / "agnostic-v3.2" / pair.person
        if self.with_sketches:
            if self.unpaired:
                out["sketch"] = d / "im_sketch_unpaired" / f"{pair.person_stem}_{pair.cloth_stem}.png"
            else:
                out["sketch"] = d / "im_sketch" / f"{pair.person_stem}.png"
        return out


class VitonHDTryOn(Dataset):
    """Try-on / design items (module docstring); None for a bad sample under "skip" (counted).

    Args:
        pairs: the pairs of the split.
        settings: how items are built.
        captions: caption id -> captions, or None (text "").
        encoder_transform: PIL -> CLIP-normalised (3, S, S) transform for ``image_clip``.
        handle: bad-sample policy.
        seed: seed of the random sketch thresholds and caption orders at training; combined with
            ``torch.initial_seed()`` of the reading process (set per worker and epoch by DataLoader).
    """

    def __init__(self, pairs: list[TryOnPair], settings: TryOnSettings, captions: dict[str, list[str]] | None,
                 encoder_transform: ImageTransform, handle: Any, seed: int = 0):
        self.pairs = pairs
        self.settings = settings
        self.captions = captions
        self.encoder_transform = encoder_transform
        self.handle = handle
        self.seed = seed
        self._rng: random.Random | None = None
        self._rng_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def rng(self) -> random.Random:
        """The per-process RNG (re-seeded when the process or the torch seed changes)."""
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = random.Random(self.seed * 1_000_003 + torch.initial_seed())
            self._rng_key = key
        return self._rng

    def text(self, pair: TryOnPair) -> str:
        """The ", "-joined captions of the pair's caption id (shuffled at training)."""
        if self.captions is None:
            return ""
        caps = list(self.captions[pair.caption_key])
        if self.settings.train:
            self.rng().shuffle(caps)
        return ", ".join(caps)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self._item(self.pairs[index])
        except BadSampleError as err:
            self.handle(err)
            return None

    def _resize(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        size = (self.settings.width, self.settings.height)
        return image if image.size == size else image.resize(size, resample)

    def _mask(self, path: Path, what: str) -> torch.Tensor:
        m = self._resize(open_single_channel(path, what).convert("L"), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(m) >= 128).float().unsqueeze(0)  # (1, H, W)

    def _item(self, pair: TryOnPair) -> dict[str, Any]:
        s = self.settings
        files = s.files(pair)
        h, w = s.height, s.width
        person_full = load_image(files["image"])
        src_w, src_h = person_full.size
        if s.keypoint_source_size is not None:
            src_h, src_w = s.keypoint_source_size
        image = to_signed(self._resize(person_full, Image.Resampling.BICUBIC))  # (3, H, W)
        cloth_pil = load_image(files["cloth"])
        cloth = to_signed(self._resize(cloth_pil, Image.Resampling.BICUBIC))  # (3, H, W)
        cloth_mask = self._mask(files["cloth_mask"], "a cloth mask (grayscale, >= 128 = garment)")  # (1,H,W)

        if s.mask_from_file:
            inpaint_mask = self._mask(files["inpaint_mask"], "an agnostic mask (white = try-on region)")
        else:
            parse_pil = open_single_channel(files["parse"], "a CIHP label map (mode P, labels 0..19)")
            parse_small = self._resize(parse_pil, Image.Resampling.NEAREST)
            parse = torch.from_numpy(np.array(parse_small)).long()  # (H, W)
            inpaint_mask = parse_inpaint_mask(parse, s.mask_dilation)  # (1, H, W)

        if s.agnostic_from_file:
            agnostic = to_signed(self._resize(load_image(files["agnostic"]), Image.Resampling.BICUBIC))
        else:
            agnostic = image * (1.0 - inpaint_mask)  # (3, H, W), region set to 0 (mid grey)

        body25 = read_body25(files["pose"])  # (25, 3)
        xy = coco18_from_body25(body25[:, :2]).clone()  # (18, 2) in source pixels
        xy[:, 0] *= w / src_w
        xy[:, 1] *= h / src_h
        pose_map = pose_heatmaps(xy, h, w, s.pose_sigma)  # (18, H, W)

        if s.with_sketches:
            lo, hi = s.sketch_threshold
            t = self.rng().randint(lo, hi) if s.train and lo != hi else lo
            sk = open_single_channel(files["sketch"], "an MGD sketch (mode L, bright strokes)").convert("L")
            factor = min(sk.size[0] / w, sk.size[1] / h)
            if s.sketch_dilate and factor > 1.5:  # thin strokes would vanish in the resize (module docstring)
                sk = sk.filter(ImageFilter.MaxFilter(2 * int(factor // 2) + 1))
            sk = self._resize(sk, Image.Resampling.BICUBIC)
            sketch = sketch_strokes(sk, t)  # (1, H, W)
        else:
            sketch = torch.zeros(1, h, w)

        if s.encoder_input == "sketch":
            drawing = Image.fromarray(((1.0 - sketch[0].numpy()) * 255).astype(np.uint8), "L")
            image_clip = self.encoder_transform(drawing.convert("RGB"))  # (3, S, S)
        else:
            image_clip = self.encoder_transform(cloth_pil)  # (3, S, S)

        return {
            "image": image,
            "cloth": cloth,
            "cloth_mask": cloth_mask,
            "agnostic": agnostic,
            "inpaint_mask": inpaint_mask,
            "pose_map": pose_map,
            "sketch": sketch,
            "image_clip": image_clip,
            "text": self.text(pair),
            "person_id": pair.person_stem,
            "cloth_id": pair.cloth_stem,
        }


class TryOnCollate(Collate):
    """`Collate` that also accepts the "tryon" kind (tensors stacked, ids and texts as lists)."""

    KINDS = (*Collate.KINDS, TRYON)


# ------------------------------------------------------------------ data module

class VitonHDDataModule(BaseDataModule):
    """VITON-HD try-on / MGD design samples (batch kind "tryon", see the module docstring).

    Args:
        root: the VITON-HD root (``train_pairs.txt``, ``test_pairs.txt``, ``train/``, ``test/``,
            ``captions.json``).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        height: output height H (512 in MGD / StableVITON / UniFashion).
        width: output width W (384).
        mode: test pair order: "unpaired" (column 2 of test_pairs.txt: FID/KID) or "paired" (the
            person's own cloth: SSIM/LPIPS). Training is always paired.
        encoder_image_size: side S of ``image_clip``, the Q-Former's image input.
        target_pad_ratio: CLIP4Cir target-pad ratio of ``image_clip``.
        on_bad_sample: "raise" (clear error naming the file) or "skip" (counted, logged).
        seed: seed of the training subset, shuffling, sketch thresholds and caption orders.
        max_train_items: keep a seeded random subset of this many training pairs (None: all).
        max_val_items: the validation loader (VITON-HD has no validation split) serves a seeded
            subset of this many paired test pairs (None: all).
        pose_sigma: heatmap width in output pixels (MGD: 9 at 512 x 384).
        keypoint_source_size: (H, W) of the pixel space of the OpenPose coordinates; None: the person
            image's own size (1024 x 768 in the official release; MGD hard-codes 1024 x 768).
        with_captions: read ``captions.json`` (MGD); otherwise every text is "".
        with_sketches: read the MGD sketches; otherwise ``sketch`` is all zeros.
        sketch_threshold_train: inclusive range of the per-item random sketch threshold at training.
        sketch_threshold_test: the sketch threshold of test / validation items.
        mask_source: "auto" (``agnostic-mask/`` if that folder exists in the split, else the parse
            map), "file" (``agnostic-mask/`` required) or "parse" (always derived).
        agnostic_source: "auto" (``agnostic-v3.2/`` if that folder exists, else derived), "file"
            or "derive" (the person with the inpaint region set to 0).
        mask_dilation: output pixels added to every side of the derived mask's bounding box.
        encoder_input: what ``image_clip`` shows: "cloth" (try-on) or "sketch" (design).
        sketch_dilate: grow sketch strokes by the downscale factor before resizing, so that thin strokes
            survive small outputs (tiny CPU demos; MGD: False).
        check_files: check at setup that every referenced file exists.
    """

    dataset_name = "vitonhd"

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int = 0,
        height: int = 512,
        width: int = 384,
        mode: Literal["paired", "unpaired"] = "unpaired",
        encoder_image_size: int = 224,
        target_pad_ratio: float = 1.25,
        on_bad_sample: OnBadSample = "raise",
        seed: int = 0,
        max_train_items: int | None = None,
        max_val_items: int | None = 16,
        pose_sigma: float = 9.0,
        keypoint_source_size: tuple[int, int] | None = None,
        with_captions: bool = True,
        with_sketches: bool = True,
        sketch_threshold_train: tuple[int, int] = (20, 127),
        sketch_threshold_test: int = 20,
        mask_source: Literal["auto", "file", "parse"] = "auto",
        agnostic_source: Literal["auto", "file", "derive"] = "auto",
        mask_dilation: int = 10,
        encoder_input: Literal["cloth", "sketch"] = "cloth",
        sketch_dilate: bool = False,
        check_files: bool = True,
    ):
        super().__init__(root, batch_size, num_workers, encoder_image_size, target_pad_ratio, on_bad_sample,
                         seed, augment=False)
        if height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive, got {height} x {width}")
        if mode not in ("paired", "unpaired"):
            raise ValueError(f"mode must be 'paired' or 'unpaired', got {mode!r}")
        for name, n in (("max_train_items", max_train_items), ("max_val_items", max_val_items)):
            if n is not None and n <= 0:
                raise ValueError(f"{name} must be positive or None, got {n}")
        if pose_sigma <= 0:
            raise ValueError(f"pose_sigma must be positive, got {pose_sigma}")
        ks = keypoint_source_size
        if ks is not None and (len(ks) != 2 or min(ks) <= 0):
            raise ValueError(f"keypoint_source_size must be (H, W) > 0 or None, got {keypoint_source_size}")
        lo, hi = sketch_threshold_train
        if not (0 <= lo <= hi <= 255) or not 0 <= sketch_threshold_test <= 255:
            raise ValueError(f"sketch thresholds must lie in 0..255 with low <= high, got "
                             f"{sketch_threshold_train} and {sketch_threshold_test}")
        if mask_source not in ("auto", "file", "parse"):
            raise ValueError(f"mask_source must be 'auto', 'file' or 'parse', got {mask_source!r}")
        if agnostic_source not in ("auto", "file", "derive"):
            raise ValueError(f"agnostic_source must be 'auto', 'file' or 'derive', got {agnostic_source!r}")
        if mask_dilation < 0:
            raise ValueError(f"mask_dilation must be >= 0, got {mask_dilation}")
        if encoder_input not in ("cloth", "sketch"):
            raise ValueError(f"encoder_input must be 'cloth' or 'sketch', got {encoder_input!r}")
        if encoder_input == "sketch" and not with_sketches:
            raise ValueError("encoder_input='sketch' needs with_sketches=True")
        self.height = height
        self.width = width
        self.mode = mode
        self.max_train_items = max_train_items
        self.max_val_items = max_val_items
        self.pose_sigma = pose_sigma
        self.keypoint_source_size = None if keypoint_source_size is None else tuple(keypoint_source_size)
        self.with_captions = with_captions
        self.with_sketches = with_sketches
        self.sketch_threshold_train = (int(lo), int(hi))
        self.sketch_threshold_test = int(sketch_threshold_test)
        self.mask_source = mask_source
        self.agnostic_source = agnostic_source
        self.mask_dilation = mask_dilation
        self.encoder_input = encoder_input
        self.sketch_dilate = sketch_dilate
        self.check_files = check_files
        self._captions: dict[str, list[str]] | None = None
        self.dropped_caption_ids: list[str] = []
        self.caption_filter_counts: dict[str, int] = {"ids_dropped": 0, "pairs_dropped": 0}
        self._pairs: dict[tuple[str, str], list[TryOnPair]] = {}
        self._listings: dict[Path, set[str]] = {}

    # ---------------------------------------------------------------- files
    @property
    def root_dir(self) -> Path:
        return require_dir(Path(self.root_path()),
                           "train_pairs.txt, test_pairs.txt, train/, test/ (VITON-HD)")

    def split_dir(self, split: str) -> Path:
        """``<root>/<split>``; FileNotFoundError naming it when absent."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        d = self.root_dir / split
        if not d.is_dir():
            raise FileNotFoundError(f"VITON-HD split folder {d} not found; expected image/, cloth/, "
                                    f"cloth-mask/, image-parse-v3/, openpose_json/ ... in it")
        return d

    def captions(self) -> dict[str, list[str]] | None:
        """captions.json after MGD's filter (None without captions); read once, always raises if missing."""
        if not self.with_captions:
            return None
        if self._captions is None:
            path = self.root_dir / "captions.json"
            data = read_json(path, dict, 'the MGD captions {"<id>": [3 strings], ...}')
            valid: dict[str, Any] = {}
            for key, caps in data.items():
                if isinstance(caps, list) and all(isinstance(c, str) for c in caps):
                    if any(not c.strip() for c in caps):  # skip: drop the empty ones, then MGD's filter
                        self.handle(BadSampleError(path, "empty_text", f"id {key!r}: empty caption in {caps!r}"))
                        caps = [c for c in caps if c.strip()]
                    valid[key] = caps
                else:
                    self.handle(BadSampleError(path, "malformed_json",
                                               f"id {key!r}: expected a list of strings"))
            self._captions, self.dropped_caption_ids = filter_captions(valid)
            self.caption_filter_counts["ids_dropped"] = len(self.dropped_caption_ids)
            if self.dropped_caption_ids:
                log.warning("vitonhd: %d caption ids with fewer than %d captions dropped (MGD filter): %s",
                            len(self.dropped_caption_ids), MIN_CAPTIONS, self.dropped_caption_ids[:20])
        return self._captions

    def _source(self, split: str, folder: str, setting: str, file_value: str) -> bool:
        """Whether items of `split` read `folder` (True) or derive it, per the auto/file/derived `setting`."""
        d = self.split_dir(split) / folder
        if setting == "auto":
            return d.is_dir()
        if setting == file_value:
            if not d.is_dir():
                raise FileNotFoundError(f"{d} not found; expected it because the source setting is "
                                        f"{setting!r}")
            return True
        return False

    def settings(self, split: str, unpaired: bool) -> TryOnSettings:
        """The item settings of `split` (train: random thresholds and caption orders)."""
        train = split == "train"
        t = self.sketch_threshold_train if train else (self.sketch_threshold_test, self.sketch_threshold_test)
        return TryOnSettings(
            split_dir=self.split_dir(split),
            height=self.height,
            width=self.width,
            unpaired=unpaired,
            train=train,
            pose_sigma=self.pose_sigma,
            keypoint_source_size=self.keypoint_source_size,  # type: ignore[arg-type]
            sketch_threshold=t,
            mask_from_file=self._source(split, "agnostic-mask", self.mask_source, "file"),
            agnostic_from_file=self._source(split, "agnostic-v3.2", self.agnostic_source, "file"),
            mask_dilation=self.mask_dilation,
            with_sketches=self.with_sketches,
            encoder_input=self.encoder_input,
            sketch_dilate=self.sketch_dilate,
        )

    def _listing(self, folder: Path) -> set[str]:
        if folder not in self._listings:
            self._listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        return self._listings[folder]

    def read_pair_file(self, split: str) -> list[tuple[str, str]]:
        """The (person, cloth) columns of ``<split>_pairs.txt`` (blank lines ignored).

        A line without exactly two names is a "malformed_line" bad sample; a missing file always raises.
        """
        path = self.root_dir / f"{split}_pairs.txt"
        if not path.is_file():
            raise BadSampleError(path, "missing_file",
                                 "pair file not found; expected '<person>.jpg <cloth>.jpg' lines")
        out = []
        for lineno, line in read_lines(path):
            if isinstance(line, BadSampleError):  # bytes that are not UTF-8
                self.handle(line)
                continue
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                self.handle(BadSampleError(f"{path}:{lineno}", "malformed_line",
                                           f"expected '<person> <cloth>', got {line.strip()!r}"))
                continue
            out.append((parts[0], parts[1]))
        return out

    def pairs(self, split: str, mode: str) -> list[TryOnPair]:
        """The valid pairs of `split` in `mode` (train is paired whatever `mode`), checked at first use."""
        unpaired = split != "train" and mode == "unpaired"
        key = (split, "unpaired" if unpaired else "paired")
        if key in self._pairs:
            return self._pairs[key]
        captions = self.captions()
        settings = self.settings(split, unpaired)
        dropped_ids = set(self.dropped_caption_ids)
        caption_path = self.root_dir / "captions.json"
        out: list[TryOnPair] = []
        for person, cloth_col in self.read_pair_file(split):
            cloth = cloth_col if unpaired else person
            pair = TryOnPair(person, cloth, split_caption_key(cloth))
            if captions is not None and pair.caption_key not in captions:
                if pair.caption_key in dropped_ids:
                    self.caption_filter_counts["pairs_dropped"] += 1
                    log.warning("vitonhd: %s pair %s %s left out: caption id %s has fewer than %d captions",
                                split, person, cloth, pair.caption_key, MIN_CAPTIONS)
                else:
                    detail = f"no captions for id {pair.caption_key!r} (pair {person} {cloth})"
                    self.handle(BadSampleError(caption_path, "missing_key", detail))
                continue
            if self.check_files and not self._files_exist(settings, pair):
                continue
            out.append(pair)
        self._pairs[key] = out
        return out

    def _files_exist(self, settings: TryOnSettings, pair: TryOnPair) -> bool:
        for role, path in settings.files(pair).items():
            if path.name not in self._listing(path.parent):
                self.handle(BadSampleError(path, "missing_file",
                                           f"{role} file of pair {pair.person} {pair.cloth} not found"))
                return False
        return True

    def setup(self, stage: str | None = None) -> None:
        """Read the pair files (and captions) the stage needs and check their files."""
        if stage in (None, "fit"):
            self.pairs("train", "paired")
            self.pairs("test", "paired")
        else:
            self.pairs("test", self.mode)
        self.log_skips(f"setup({stage})")

    # ---------------------------------------------------------------- datasets and loaders
    def dataset(
        self, split: str, mode: str | None = None, pairs: list[TryOnPair] | None = None
    ) -> VitonHDTryOn:
        """Items of `split` in `mode` (default: the configured test mode; train is always paired)."""
        mode = self.mode if mode is None else mode
        unpaired = split != "train" and mode == "unpaired"
        pairs = self.pairs(split, mode) if pairs is None else pairs
        return VitonHDTryOn(pairs, self.settings(split, unpaired), self.captions(), self.eval_transform,
                            self.skip_counter.handle, seed=self.seed)

    def _subset(self, pairs: list[TryOnPair], n: int | None) -> list[TryOnPair]:
        if n is None or n >= len(pairs):
            return pairs
        g = torch.Generator().manual_seed(self.seed)
        return [pairs[i] for i in sorted(torch.randperm(len(pairs), generator=g)[:n].tolist())]

    def collate(self, kind: str) -> Collate:
        return TryOnCollate(kind, self.dataset_name, self.tokenizer, self.max_length)

    def train_dataloader(self) -> DataLoader:
        """Shuffled paired training items (a seeded subset of `max_train_items`)."""
        pairs = self._subset(self.pairs("train", "paired"), self.max_train_items)
        return self.make_loader(self.dataset("train", "paired", pairs), TRYON, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        """A seeded subset (`max_val_items`) of the paired test items (VITON-HD has no validation split)."""
        pairs = self._subset(self.pairs("test", "paired"), self.max_val_items)
        return self.make_loader(self.dataset("test", "paired", pairs), TRYON, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Every test item in the configured `mode`, in pair-file order."""
        return self.make_loader(self.dataset("test", self.mode), TRYON, shuffle=False)
