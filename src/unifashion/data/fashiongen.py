"""FashionGen from the official HDF5 release (DATASETS.md section 1).

Layout::

    <root>/fashiongen_256_256_train.h5
    <root>/fashiongen_256_256_validation.h5

Every key is a top-level dataset with one row per image: ``input_image`` uint8 (N, 256, 256, 3),
text keys as byte strings (N, 1) decoded as latin-1, ``input_productID`` int (N, 1). Rows of one
product are contiguous. There is no test file: evaluation uses the validation file.

The metadata columns are read once in `setup` (main process) and the file is closed again; image
rows are read by the datasets through an h5py handle opened lazily in each process that reads
(reopened after a fork, never pickled).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from unifashion.data.base import BaseDataModule
from unifashion.data.batch import PAIRS, RetrievalSplit
from unifashion.data.errors import BadSampleError, OnBadSample
from unifashion.data.files import require_dir
from unifashion.data.transforms import ImageTransform, fit_image, pil_to_tensor

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
IMAGE_KEY = "input_image"
REQUIRED_KEYS = (IMAGE_KEY, "input_description", "input_productID")
OPTIONAL_TEXT_KEYS = ("input_name", "input_category", "input_subcategory")


def h5_path(root: str | Path, split: str) -> Path:
    """The official file name of `split` ("train" or "validation")."""
    if split not in SPLITS:
        raise ValueError(f"FashionGen split must be one of {SPLITS} (there is no test file), got {split!r}")
    return Path(root) / f"fashiongen_256_256_{split}.h5"


def decode_latin1(value: Any) -> str:
    """One HDF5 string cell (bytes, numpy bytes, str, or a 1-element array of those) -> str (latin-1)."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("latin-1")
    return str(value)


def contiguous_groups(ids: list[int]) -> list[tuple[int, int, int]]:
    """Runs of equal consecutive ids: ``[(id, start, end), ...]`` with `end` exclusive (SAP's grouping)."""
    groups: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            if len(ids):
                groups.append((ids[start], start, i))
            start = i
    return groups


@dataclass
class FashionGenTable:
    """The per-row metadata of one HDF5 file.

    path: the HDF5 file.
    product_ids: product id of every row.
    descriptions: `input_description` of every row (latin-1 decoded).
    names: `input_name` of every row ("" when absent and skipped).
    categories: `input_category` of every row.
    subcategories: `input_subcategory` of every row.
    groups: contiguous runs of one product, ``(product_id, start, end)``.
    excluded: rows left out as bad samples under ``on_bad_sample="skip"`` (empty description,
        bytes that are not latin-1 text); every split built from the table skips them.
    """

    path: Path
    product_ids: list[int]
    descriptions: list[str]
    names: list[str]
    categories: list[str]
    subcategories: list[str]
    groups: list[tuple[int, int, int]]
    excluded: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.product_ids)

    def usable_rows(self) -> list[int]:
        """Every row not in `excluded`, in file order."""
        return [i for i in range(len(self.product_ids)) if i not in self.excluded]


def latin1_problem(text: str) -> str | None:
    """Why a latin-1-decoded text is not plausible latin-1 text, or None.

    Every byte decodes as latin-1, so "invalid" means control characters: C0 controls other than
    tab / newline / carriage return (e.g. NUL: a corrupt or binary cell), and C1 controls
    (0x80-0x9F), which latin-1 text does not contain but UTF-8 continuation bytes and cp1252
    punctuation (0x92 = right quote) do, i.e. the bytes were written in another encoding.
    """
    for i, ch in enumerate(text):
        code = ord(ch)
        if (code < 0x20 and ch not in "\t\n\r") or 0x7F <= code <= 0x9F:
            return f"control byte 0x{code:02X} at offset {i} (not latin-1 text: UTF-8 or cp1252 bytes, or corrupt)"
    return None


def read_table(path: Path, handle: Any) -> FashionGenTable:
    """Read the metadata columns of one FashionGen HDF5 file.

    Args:
        path: the HDF5 file.
        handle: `BaseDataModule.handle`-like callable applying the bad-sample policy; a missing
            optional text key is reported there and, when skipped, filled with "".

    Raises:
        FileNotFoundError: the file is missing.
        BadSampleError: always raised (nothing can be skipped) for a file that is not readable HDF5
            ("corrupt_file": truncated download), a missing required key, or columns of different
            lengths; raised or counted (then the row is left out, `FashionGenTable.excluded`) for an
            empty ``input_description`` ("empty_text") or one with control bytes ("bad_encoding").
    """
    if not path.is_file():
        raise FileNotFoundError(f"FashionGen file {path} not found; expected the official HDF5 release there")
    try:
        return _read_table(path, handle)
    except OSError as e:  # h5py: truncated file, bad superblock, unreadable chunk
        raise BadSampleError(path, "corrupt_file",
                             f"cannot read the HDF5 file ({e}); truncated or not an HDF5 file?") from e


def _read_table(path: Path, handle: Any) -> FashionGenTable:
    with h5py.File(path, "r") as f:
        for key in REQUIRED_KEYS:
            if key not in f:
                raise BadSampleError(path, "missing_key", f"HDF5 key {key!r} missing (required)")
        n = f[IMAGE_KEY].shape[0]
        images = f[IMAGE_KEY]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise BadSampleError(
                path, "malformed_data", f"HDF5 key {IMAGE_KEY!r} has shape {images.shape}, expected (N, H, W, 3)"
            )
        for key in REQUIRED_KEYS[1:] + tuple(k for k in OPTIONAL_TEXT_KEYS if k in f):
            rows = f[key].shape[0] if f[key].ndim else 0
            if rows != n:
                raise BadSampleError(
                    path, "malformed_data", f"HDF5 key {key!r} has {rows} rows, {IMAGE_KEY!r} has {n}"
                )
        size = os.path.getsize(path)
        for key in REQUIRED_KEYS + tuple(k for k in OPTIONAL_TEXT_KEYS if k in f):
            offset = f[key].id.get_offset()  # None for chunked / compact storage
            end = None if offset is None else offset + f[key].id.get_storage_size()
            if end is not None and end > size:
                raise BadSampleError(path, "corrupt_file", f"truncated: HDF5 key {key!r} ends at byte {end}, "
                                                           f"the file has {size} bytes (incomplete download?)")
        pids = [int(v) for v in np.asarray(f["input_productID"][:]).reshape(n, -1)[:, 0]]
        cols: dict[str, list[str]] = {"input_description": [decode_latin1(v) for v in f["input_description"][:]]}
        for key in OPTIONAL_TEXT_KEYS:
            if key in f:
                cols[key] = [decode_latin1(v) for v in f[key][:]]
            else:
                handle(BadSampleError(path, "missing_key", f"HDF5 key {key!r} missing; filled with ''"))
                cols[key] = [""] * n
    for key, col in [("input_productID", pids), *cols.items()]:
        if len(col) != n:
            raise BadSampleError(
                path, "malformed_data", f"HDF5 key {key!r} has {len(col)} rows, {IMAGE_KEY!r} has {n}"
            )
    excluded = set()
    for i, text in enumerate(cols["input_description"]):
        problem = "input_description is empty" if not text.strip() else latin1_problem(text)
        if problem:
            reason = "empty_text" if not text.strip() else "bad_encoding"
            handle(BadSampleError(path, reason, f"row {i} (product {pids[i]}): {problem}; row left out"))
            excluded.add(i)
    groups = contiguous_groups(pids)
    n_products = len({g[0] for g in groups})
    if n_products != len(groups):
        log.warning("%s: %d product ids appear in non-contiguous runs; each id keeps its first run's text",
                    path, len(groups) - n_products)
    return FashionGenTable(
        path=path,
        product_ids=pids,
        descriptions=cols["input_description"],
        names=cols["input_name"],
        categories=cols["input_category"],
        subcategories=cols["input_subcategory"],
        groups=groups,
        excluded=frozenset(excluded),
    )


class FashionGenImages(Dataset):
    """Rows of one FashionGen HDF5 file as dict items.

    Items: ``image`` (3, S, S), ``product_id`` int, ``text`` (description), ``subcategory``,
    ``category``, ``row`` (HDF5 row index). With `pairs=False` the item is the gallery form
    (no ``text``). With `target_size`, also ``generation_image`` float (3, H, W) in [-1, 1]: the
    diffusion target, made from the HDF5 original (256 px) by `fit_image` (aspect ratio kept), beside
    the encoder's view ``image``; a training flip (`transform.augment`) is applied to both views alike.

    Args:
        table: the file's metadata (`read_table`).
        rows: which HDF5 rows, in order.
        transform: PIL -> tensor transform.
        channel_order: "RGB" (majority reading) or "BGR" (EasyCV's reading; UNVERIFIED which is right).
        pairs: include the caption (``text``).
        target_size: (H, W) of ``generation_image`` (the generator's resolution), or None (not added).
    """

    def __init__(
        self,
        table: FashionGenTable,
        rows: list[int],
        transform: ImageTransform,
        channel_order: Literal["RGB", "BGR"] = "RGB",
        pairs: bool = True,
        target_size: tuple[int, int] | None = None,
    ):
        self.table = table
        self.rows = rows
        self.transform = transform
        self.channel_order = channel_order
        self.pairs = pairs
        self.target_size = None if target_size is None else (int(target_size[0]), int(target_size[1]))
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles are never pickled into workers
        state["_pid"] = None
        return state

    def _images(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.table.path, "r")  # opened lazily, once per process
            self._pid = os.getpid()
        return self._file[IMAGE_KEY]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        pixels = np.asarray(self._images()[row], dtype=np.uint8)  # (H, W, 3)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1].copy()
        pil = Image.fromarray(pixels, mode="RGB")
        target = None
        if self.target_size is not None:
            transform = self.transform
            if transform.augment:  # one flip for both views (the transform would draw its own)
                if torch.rand(()) < 0.5:
                    pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                transform = copy.copy(transform)
                transform.augment = False
            target = pil_to_tensor(fit_image(pil, self.target_size)) * 2 - 1  # (3, H, W) in [-1, 1]
            image = transform(pil)
        else:
            image = self.transform(pil)
        item: dict[str, Any] = {
            "image": image,  # (3, S, S)
            "product_id": self.table.product_ids[row],
            "subcategory": self.table.subcategories[row],
            "category": self.table.categories[row],
            "row": row,
        }
        if self.pairs:
            item["text"] = self.table.descriptions[row]
        if target is not None:
            item["generation_image"] = target  # (3, H, W) in [-1, 1]
        return item


class FashionGenDataModule(BaseDataModule):
    """FashionGen image-caption pairs and the product-level retrieval split.

    Args:
        root: directory holding ``fashiongen_256_256_{train,validation}.h5``.
        batch_size: items per batch.
        num_workers: DataLoader worker processes (each opens the HDF5 file itself).
        image_size: side of the square model input.
        target_pad_ratio: CLIP4Cir target-pad ratio (256x256 images are never padded).
        on_bad_sample: "raise" or "skip" (a missing optional key such as ``input_subcategory``
            is filled with "" and counted; missing required keys always raise).
        max_train_items: keep a seeded random subset of this many training rows (None: all).
        seed: seed of the subset and of shuffling.
        augment: random horizontal flips on training images.
        channel_order: how to read ``input_image`` ("RGB", the majority reading, or "BGR").
        generation_size: (H, W) of the diffusion target ``generation_image`` added to every item (the
            generator's `height`, `width`; see `FashionGenImages`), or None (not added).
    """

    dataset_name = "fashiongen"

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 224,
        target_pad_ratio: float = 1.25,
        on_bad_sample: OnBadSample = "raise",
        max_train_items: int | None = None,
        seed: int = 0,
        augment: bool = False,
        channel_order: Literal["RGB", "BGR"] = "RGB",
        generation_size: tuple[int, int] | None = None,
    ):
        super().__init__(root, batch_size, num_workers, image_size, target_pad_ratio, on_bad_sample, seed, augment)
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        if max_train_items is not None and max_train_items <= 0:
            raise ValueError(f"max_train_items must be positive or None, got {max_train_items}")
        self.max_train_items = max_train_items
        self.channel_order = channel_order
        if generation_size is not None and (len(generation_size) != 2 or min(generation_size) <= 0):
            raise ValueError(f"generation_size must be (height, width) > 0 or None, got {generation_size}")
        self.generation_size = None if generation_size is None else tuple(generation_size)
        self.tables: dict[str, FashionGenTable] = {}

    def table(self, split: str) -> FashionGenTable:
        """The metadata of `split` ("train" or "validation"), read on first use."""
        if split not in self.tables:
            root = require_dir(Path(self.root_path()), "fashiongen_256_256_{train,validation}.h5")
            self.tables[split] = read_table(h5_path(root, split), self.handle)
        return self.tables[split]

    def setup(self, stage: str | None = None) -> None:
        """Read the metadata of the files the stage needs."""
        splits = ("train", "validation") if stage in (None, "fit") else ("validation",)
        for split in splits:
            self.table(split)
        self.log_skips(f"setup({stage})")

    def train_rows(self) -> list[int]:
        """Training rows: all, or a seeded random subset of `max_train_items` (in file order)."""
        usable = self.table("train").usable_rows()
        n = len(usable)
        if self.max_train_items is None or self.max_train_items >= n:
            return usable
        g = torch.Generator().manual_seed(self.seed)
        return [usable[i] for i in sorted(torch.randperm(n, generator=g)[: self.max_train_items].tolist())]

    def pairs_dataset(self, split: str) -> FashionGenImages:
        """Image-caption pairs, one per HDF5 row (caption = ``input_description``)."""
        rows = self.train_rows() if split == "train" else self.table(split).usable_rows()
        transform = self.train_transform if split == "train" else self.eval_transform
        return FashionGenImages(self.table(split), rows, transform, self.channel_order, pairs=True,
                                target_size=self.generation_size)

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.pairs_dataset("train"), PAIRS, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.pairs_dataset("validation"), PAIRS, shuffle=False)

    def retrieval_split(self, split: str = "validation") -> RetrievalSplit:
        """Every image of `split` and one text per product (DATASETS.md 6.1).

        The text of a product is the description of the first row of its first contiguous run (rows
        left out as bad samples are skipped, in the gallery and for texts).
        """
        t = self.table(split)
        rows = t.usable_rows()
        images = FashionGenImages(t, rows, self.eval_transform, self.channel_order, pairs=False,
                                  target_size=self.generation_size)
        seen: set[int] = set()
        texts, text_pids, text_subs = [], [], []
        for pid, start, end in t.groups:
            first = next((r for r in range(start, end) if r not in t.excluded), None)
            if pid in seen or first is None:
                continue
            seen.add(pid)
            texts.append(t.descriptions[first])
            text_pids.append(pid)
            text_subs.append(t.subcategories[first])
        return RetrievalSplit(
            images=images,
            texts=texts,
            text_product_ids=torch.tensor(text_pids, dtype=torch.long),  # (M,)
            text_subcategories=text_subs,
            image_product_ids=torch.tensor([t.product_ids[r] for r in rows], dtype=torch.long),  # (N,)
            image_subcategories=[t.subcategories[r] for r in rows],
        )

    def images_dataloader(self, split: str = "validation") -> DataLoader:
        """A loader over every image of `split` (gallery items: image, product_id, subcategory)."""
        return self.make_loader(self.retrieval_split(split).images, "images", shuffle=False)
