"""Fashion-IQ composed retrieval from the official layout (DATASETS.md section 2).

Layout (`root` may point at ``fashionIQ_dataset/`` or at its parent)::

    fashionIQ_dataset/captions/cap.{dress,shirt,toptee}.{train,val,test}.json
    fashionIQ_dataset/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json
    fashionIQ_dataset/images/<ASIN>.png | <ASIN>.jpg

Caption files are JSON lists of ``{"candidate": ASIN, "target": ASIN, "captions": [c1, c2]}``
(test files have no ``target``); split files are JSON lists of ASINs. Images are probed as
``.png`` then ``.jpg`` (the extension differs between distributions).

Texts (C4C/SPRC/UniFashion rules, DATASETS.md 2.5): each caption is stripped of ``.?, `` at both
ends; the leading caption gets ``str.capitalize()`` (first letter upper, rest lower). Evaluation
uses "C1 and c2"; training draws u ~ U(0, 1) per triplet: u < 0.25 "C1 and c2",
0.25 < u < 0.5 "C2 and c1", 0.5 < u < 0.75 "C1", otherwise "C2" (so u == 0.25 or 0.5 gives "C2").
One empty or whitespace caption of the two is kept as it is (C4C does the same; the real files
contain a few), e.g. "Is red and ". A triplet whose two captions are both empty has no text: it is a
bad sample ("empty_text": raised, or counted and left out), as is an empty Fashion-IQ-cap caption.

Phase 2 (composed fine-tuning, eqs. 10-12) also needs the caption of each target image (Z_C and the
ITG answer): with ``target_captions`` set to a Fashion-IQ-cap file pattern such as
``next_llava.{split}.{cat}.caption.json`` (DATASETS.md 2.6; written from a captioning checkpoint by
``tasks/cir/captions.py``), triplet items carry ``target_caption``, read from the file of the
triplet's own split and category only, so a training batch never carries a validation caption.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from unifashion.data.base import BaseDataModule
from unifashion.data.batch import PAIRS, TRIPLETS
from unifashion.data.errors import BadSampleError, OnBadSample
from unifashion.data.files import load_image, read_json
from unifashion.data.transforms import ImageTransform

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val", "test")
DATASET_DIR = "fashionIQ_dataset"


def strip_caption(caption: str) -> str:
    """C4C's stripping of ``.?, `` at both ends."""
    return caption.strip(".?, ")


def eval_text(captions: list[str]) -> str:
    """Deterministic evaluation text "C1 and c2"."""
    return f"{strip_caption(captions[0]).capitalize()} and {strip_caption(captions[1])}"


def random_text(captions: list[str], u: float) -> str:
    """C4C's 4-way training text for a draw `u` in [0, 1) (see module docstring)."""
    c1, c2 = strip_caption(captions[0]), strip_caption(captions[1])
    if u < 0.25:
        return f"{c1.capitalize()} and {c2}"
    if 0.25 < u < 0.5:
        return f"{c2.capitalize()} and {c1}"
    if 0.5 < u < 0.75:
        return c1.capitalize()
    return c2.capitalize()


def read_caption_file(path: Path) -> dict[str, str]:
    """A Fashion-IQ-cap file, ``[{"image": ASIN, "caption": str, ...}]`` -> {ASIN: caption}.

    Raises:
        FileNotFoundError: no such file; ValueError: an entry is not ``{"image": str, "caption": str}``
            or an ASIN appears twice with different captions.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Fashion-IQ-cap file {path} not found; write it with `unifashion caption --style fashioniq` "
            "(tasks/cir/captions.py) from a captioning checkpoint"
        )
    data = read_json(path, list, 'a JSON list of {"image": ASIN, "caption": str}')
    out: dict[str, str] = {}
    for i, e in enumerate(data):
        if not (isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("caption"), str)):
            raise ValueError(f"{path}: entry {i} is not {{'image': str, 'caption': str}}: {e!r}")
        if out.get(e["image"], e["caption"]) != e["caption"]:
            raise ValueError(f"{path}: image {e['image']} has two different captions")
        out[e["image"]] = e["caption"]
    return out


@dataclass
class Triplet:
    """One entry of a caption file.

    category: dress / shirt / toptee. candidate: reference ASIN. target: target ASIN (None in the
    test split). captions: the two relative captions.
    """

    category: str
    candidate: str
    target: str | None
    captions: list[str]


class ImageIndex:
    """``<ASIN>`` -> image path under ``images/``, probing extensions in order (one directory scan)."""

    def __init__(self, folder: Path, extensions: tuple[str, ...]):
        self.folder = folder
        self.extensions = extensions
        self._files: set[str] | None = None

    def path(self, asin: str) -> Path:
        """The image of `asin`; BadSampleError("missing_file") listing the probed names if none."""
        if self._files is None:
            self._files = set(os.listdir(self.folder)) if self.folder.is_dir() else set()
        for ext in self.extensions:
            if f"{asin}{ext}" in self._files:
                return self.folder / f"{asin}{ext}"
        probed = " or ".join(f"{asin}{e}" for e in self.extensions)
        raise BadSampleError(self.folder / f"{asin}{self.extensions[0]}", "missing_file", f"no image {probed}")


class FashionIQTriplets(Dataset):
    """(reference, target, text) triplets. Items: ``reference``, ``target`` (3,S,S), ``text``,
    ``reference_id``, ``target_id``, ``category``. A bad image under "skip" yields None (counted).

    Args:
        triplets: entries with targets.
        images: ASIN -> path index.
        transform: PIL -> tensor transform.
        handle: bad-sample policy.
        randomize: draw the training text (else the evaluation text).
        seed: seed of the text draws; combined with ``torch.initial_seed()`` of the reading process
            (which DataLoader sets per worker and per epoch from the loader's seeded generator).
    """

    def __init__(self, triplets: list[Triplet], images: ImageIndex, transform: ImageTransform, handle: Any,
                 randomize: bool, seed: int = 0, target_captions: dict[str, dict[str, str]] | None = None):
        self.triplets = triplets
        self.target_captions = target_captions
        """category -> ASIN -> caption of the triplets' own split (items get ``target_caption``), or None."""
        self.images = images
        self.transform = transform
        self.handle = handle
        self.randomize = randomize
        self.seed = seed
        self._rng: random.Random | None = None
        self._rng_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.triplets)

    def rng(self) -> random.Random:
        """The per-process RNG of the text draws (re-seeded when the process or torch seed changes)."""
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = random.Random(self.seed * 1_000_003 + torch.initial_seed())
            self._rng_key = key
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        t = self.triplets[index]
        try:
            ref = load_image(self.images.path(t.candidate))
            tgt = load_image(self.images.path(t.target))  # type: ignore[arg-type]
        except BadSampleError as err:
            self.handle(err)
            return None
        text = random_text(t.captions, self.rng().random()) if self.randomize else eval_text(t.captions)
        item = {
            "reference": self.transform(ref),  # (3, S, S)
            "target": self.transform(tgt),  # (3, S, S)
            "text": text,
            "reference_id": t.candidate,
            "target_id": t.target,
            "category": t.category,
        }
        if self.target_captions is not None:
            caption = self.target_captions.get(t.category, {}).get(t.target)  # type: ignore[arg-type]
            if caption is None:
                self.handle(BadSampleError(Path(t.target or ""), "missing_key",
                                           f"target {t.target} ({t.category}) has no caption in the target-caption file"))
                return None
            item["target_caption"] = caption
        return item


class FashionIQQueries(Dataset):
    """Evaluation queries: ``reference`` (3,S,S), ``text`` ("C1 and c2"), ``reference_id``,
    ``target_id`` (None in the test split), ``category``."""

    def __init__(self, triplets: list[Triplet], images: ImageIndex, transform: ImageTransform, handle: Any):
        self.triplets = triplets
        self.images = images
        self.transform = transform
        self.handle = handle

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        t = self.triplets[index]
        try:
            ref = load_image(self.images.path(t.candidate))
        except BadSampleError as err:
            self.handle(err)
            return None
        return {
            "reference": self.transform(ref),  # (3, S, S)
            "text": eval_text(t.captions),
            "reference_id": t.candidate,
            "target_id": t.target,
            "category": t.category,
        }


class FashionIQImages(Dataset):
    """Gallery / caption-pair images. Items: ``image`` (3,S,S), ``image_id``, ``category`` and, when
    captions are given, ``text`` and ``product_id`` (index of the ASIN)."""

    def __init__(self, asins: list[str], category: str, images: ImageIndex, transform: ImageTransform,
                 handle: Any, captions: list[str] | None = None):
        self.asins = asins
        self.category = category
        self.images = images
        self.transform = transform
        self.handle = handle
        self.captions = captions

    def __len__(self) -> int:
        return len(self.asins)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        asin = self.asins[index]
        try:
            image = load_image(self.images.path(asin))
        except BadSampleError as err:
            self.handle(err)
            return None
        item: dict[str, Any] = {"image": self.transform(image), "image_id": asin, "category": self.category}
        if self.captions is not None:
            item["text"] = self.captions[index]
            item["product_id"] = index
        return item


class FashionIQDataModule(BaseDataModule):
    """Fashion-IQ triplets, per-category galleries and queries, and optional caption pairs.

    Args:
        root: ``fashionIQ_dataset/`` or its parent.
        categories: the categories to load.
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        image_size: side of the square model input.
        target_pad_ratio: CLIP4Cir target-pad ratio.
        on_bad_sample: "raise" or "skip" (missing/malformed caption or split files, malformed
            entries, missing or corrupt images are counted and logged).
        seed: seed of the training-text draws and of shuffling.
        augment: random horizontal flips on training images.
        image_extensions: extensions probed in order for ``images/<ASIN><ext>``.
        captions_file: optional Fashion-IQ-cap file, a JSON list of ``{"image": ASIN, "caption": str}``
            (UniFashion's ``split.llava_caption`` shape); relative paths are taken from the dataset
            directory. Enables `caption_pairs_dataloader`.
        check_images: check at setup that every referenced image exists (missing ones are raised or
            skipped before indexing, so galleries and queries stay consistent).
        target_captions: Fashion-IQ-cap file pattern with ``{split}`` and ``{cat}`` (e.g.
            ``next_llava.{split}.{cat}.caption.json``; relative paths are taken from the dataset
            directory when they do not exist as given): triplet items then carry ``target_caption``
            (phase 2), each split reading its own files.
    """

    dataset_name = "fashioniq"

    def __init__(
        self,
        root: str,
        categories: tuple[str, ...] = CATEGORIES,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 224,
        target_pad_ratio: float = 1.25,
        on_bad_sample: OnBadSample = "raise",
        seed: int = 0,
        augment: bool = False,
        image_extensions: tuple[str, ...] = (".png", ".jpg"),
        captions_file: str | None = None,
        check_images: bool = True,
        target_captions: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, image_size, target_pad_ratio, on_bad_sample, seed, augment)
        bad = [c for c in categories if c not in CATEGORIES]
        if bad or not categories:
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {categories!r}")
        if not image_extensions:
            raise ValueError("image_extensions must not be empty")
        self.categories = tuple(categories)
        self.image_extensions = tuple(image_extensions)
        self.captions_file = captions_file
        self.check_images = check_images
        if target_captions is not None and not ("{split}" in target_captions and "{cat}" in target_captions):
            raise ValueError(
                f"target_captions must be a file pattern with {{split}} and {{cat}} (each split reads its own "
                f"captions; one fixed file could put validation captions into training), got {target_captions!r}"
            )
        self.target_captions = target_captions
        self._triplets: dict[tuple[str, str], list[Triplet]] = {}
        self._split_ids: dict[tuple[str, str], list[str]] = {}
        self._images: ImageIndex | None = None

    @property
    def dataset_dir(self) -> Path:
        """The ``fashionIQ_dataset`` directory (`root` itself or ``root/fashionIQ_dataset``)."""
        root = Path(self.root_path())
        for cand in (root, root / DATASET_DIR):
            if (cand / "captions").is_dir() and (cand / "image_splits").is_dir():
                return cand
        raise FileNotFoundError(
            f"Fashion-IQ root {root}: expected captions/ and image_splits/ (and images/) in it or in "
            f"{root / DATASET_DIR}"
        )

    @property
    def images(self) -> ImageIndex:
        if self._images is None:
            folder = self.dataset_dir / "images"
            if not folder.is_dir():
                raise FileNotFoundError(f"Fashion-IQ image folder {folder} not found; expected <ASIN>.png/.jpg files")
            self._images = ImageIndex(folder, self.image_extensions)
        return self._images

    def _check_split(self, category: str, split: str) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def _exists(self, asin: str, where: str) -> bool:
        if not self.check_images:
            return True
        try:
            self.images.path(asin)
            return True
        except BadSampleError as err:
            self.handle(BadSampleError(err.path, err.reason, f"{err.detail} (referenced by {where})"))
            return False

    def image_ids(self, category: str, split: str) -> list[str]:
        """The ASINs of ``image_splits/split.<category>.<split>.json`` (existing images only under "skip")."""
        self._check_split(category, split)
        key = (category, split)
        if key not in self._split_ids:
            path = self.dataset_dir / "image_splits" / f"split.{category}.{split}.json"
            try:
                data = read_json(path, list, "a JSON list of ASIN strings")
            except BadSampleError as err:
                self.handle(err)
                data = []
            ids = []
            for i, a in enumerate(data):
                if not isinstance(a, str):
                    self.handle(BadSampleError(path, "malformed_json", f"entry {i} is {a!r}, expected an ASIN string"))
                elif self._exists(a, str(path)):
                    ids.append(a)
            self._split_ids[key] = ids
        return self._split_ids[key]

    def triplets(self, category: str, split: str) -> list[Triplet]:
        """The valid entries of ``captions/cap.<category>.<split>.json`` (test: target None)."""
        self._check_split(category, split)
        key = (category, split)
        if key in self._triplets:
            return self._triplets[key]
        path = self.dataset_dir / "captions" / f"cap.{category}.{split}.json"
        try:
            data = read_json(path, list, "a JSON list of {candidate, target, captions} objects")
        except BadSampleError as err:
            self.handle(err)
            data = []
        out: list[Triplet] = []
        for i, e in enumerate(data):
            problem = None
            if not isinstance(e, dict):
                problem = f"entry {i} is not an object"
            elif not isinstance(e.get("candidate"), str):
                problem = f"entry {i} has no 'candidate' ASIN string"
            elif split != "test" and not isinstance(e.get("target"), str):
                problem = f"entry {i} has no 'target' ASIN string (required in the {split} split)"
            elif (not isinstance(e.get("captions"), list) or len(e["captions"]) != 2
                  or not all(isinstance(c, str) for c in e["captions"])):
                problem = f"entry {i}: 'captions' must be a list of 2 strings, got {e.get('captions')!r}"
            if problem:
                self.handle(BadSampleError(path, "malformed_json", problem))
                continue
            if all(not strip_caption(c).strip() for c in e["captions"]):
                self.handle(BadSampleError(path, "empty_text", f"entry {i} ({e['candidate']} -> {e.get('target')}): "
                                                               "both captions are empty; entry left out"))
                continue
            target = e.get("target") if isinstance(e.get("target"), str) else None
            where = f"{path} entry {i}"
            if not self._exists(e["candidate"], where) or (target is not None and not self._exists(target, where)):
                continue
            out.append(Triplet(category, e["candidate"], target, list(e["captions"])))
        self._triplets[key] = out
        return out

    def setup(self, stage: str | None = None) -> None:
        """Read the caption and split files the stage needs (train+val for fit, val otherwise)."""
        splits = ("train", "val") if stage in (None, "fit") else ("val",)
        for split in splits:
            for cat in self.categories:
                self.triplets(cat, split)
                if split != "train":
                    self.image_ids(cat, split)
        self.log_skips(f"setup({stage})")

    def triplet_dataset(self, split: str = "train") -> FashionIQTriplets:
        """Triplets of every category of `split` (random training text in "train", "C1 and c2" otherwise)."""
        if split == "test":
            raise ValueError("the Fashion-IQ test split has no targets; use queries(category, 'test')")
        triplets = [t for cat in self.categories for t in self.triplets(cat, split)]
        transform = self.train_transform if split == "train" else self.eval_transform
        captions = None
        if self.target_captions is not None:
            captions = {cat: self.split_captions(cat, split) for cat in self.categories}
        return FashionIQTriplets(triplets, self.images, transform, self.skip_counter.handle,
                                 randomize=split == "train", seed=self.seed, target_captions=captions)

    def caption_file(self, category: str, split: str, pattern: str | None = None) -> Path:
        """The Fashion-IQ-cap file of (category, split) from `pattern` (default: ``target_captions``)."""
        self._check_split(category, split)
        pattern = pattern or self.target_captions
        if pattern is None:
            raise ValueError("no target-caption file pattern (set target_captions, e.g. next_llava.{split}.{cat}.caption.json)")
        path = Path(pattern.format(split=split, cat=category))
        if not path.is_absolute() and not path.is_file():
            path = self.dataset_dir / path
        return path

    def split_captions(self, category: str, split: str, pattern: str | None = None) -> dict[str, str]:
        """ASIN -> caption of the Fashion-IQ-cap file of (category, split) (`read_caption_file`)."""
        return read_caption_file(self.caption_file(category, split, pattern))

    def gallery(self, category: str, split: str = "val") -> FashionIQImages:
        """Every image of ``split.<category>.<split>.json`` (the per-category gallery, DATASETS.md 6.3)."""
        return FashionIQImages(self.image_ids(category, split), category, self.images, self.eval_transform,
                               self.skip_counter.handle)

    def queries(self, category: str, split: str = "val") -> FashionIQQueries:
        """The queries of `category` in `split` (reference, "C1 and c2", target id or None)."""
        return FashionIQQueries(self.triplets(category, split), self.images, self.eval_transform,
                                self.skip_counter.handle)

    def caption_pairs(self) -> FashionIQImages:
        """Fashion-IQ-cap image-caption pairs from `captions_file` (ValueError when it is not set)."""
        if self.captions_file is None:
            raise ValueError("captions_file is not set; Fashion-IQ-cap pairs need a JSON list of {image, caption}")
        path = Path(self.captions_file)
        if not path.is_absolute() and not path.is_file():
            path = self.dataset_dir / path
        data = read_json(path, list, 'a JSON list of {"image": ASIN, "caption": str}')
        asins, caps = [], []
        for i, e in enumerate(data):
            if not (isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("caption"), str)):
                self.handle(BadSampleError(path, "malformed_json", f"entry {i} is not {{'image': str, 'caption': str}}"))
                continue
            if not e["caption"].strip():
                self.handle(BadSampleError(path, "empty_text", f"entry {i} ({e['image']}): empty caption; left out"))
                continue
            if self._exists(e["image"], f"{path} entry {i}"):
                asins.append(e["image"])
                caps.append(e["caption"])
        return FashionIQImages(asins, "caption", self.images, self.train_transform, self.skip_counter.handle, caps)

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.triplet_dataset("train"), TRIPLETS, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        """Validation triplets of every category with the evaluation text (loss monitoring)."""
        return self.make_loader(self.triplet_dataset("val"), TRIPLETS, shuffle=False)

    def caption_pairs_dataloader(self) -> DataLoader:
        """Shuffled Fashion-IQ-cap pairs (batch kind "pairs")."""
        return self.make_loader(self.caption_pairs(), PAIRS, shuffle=True, drop_last=True)

    def gallery_dataloader(self, category: str, split: str = "val") -> DataLoader:
        return self.make_loader(self.gallery(category, split), "images", shuffle=False)

    def queries_dataloader(self, category: str, split: str = "val") -> DataLoader:
        return self.make_loader(self.queries(category, split), "queries", shuffle=False)

    def all_galleries(self, split: str = "val") -> Dataset:
        """The galleries of every category concatenated (items carry their ``category``)."""
        return ConcatDataset([self.gallery(c, split) for c in self.categories])
