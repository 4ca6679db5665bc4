"""Fashion200K from the official release (DATASETS.md section 3).

Layout::

    <root>/labels/<category>_{train,test}_detect_all.txt    path \\t detection score \\t description
    <root>/women/<category>/<subcategory>/<pid>/<pid>_<k>.jpeg
    <root>/test_queries.txt                                  (TIRG) "<source path> <target path>" per line

Paths in the label files are relative to `<root>`. The product id is the name of the image's
parent folder (``<pid>``). Composed-retrieval queries derive their text with TIRG's rule (see
`replace_text`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from unifashion.data.base import BaseDataModule
from unifashion.data.batch import PAIRS, RetrievalSplit
from unifashion.data.errors import BadSampleError, OnBadSample
from unifashion.data.files import is_blank, load_image, read_lines, require_dir
from unifashion.data.transforms import ImageTransform

SPLITS = ("train", "test")


def tirg_postprocess(caption: str) -> str:
    """TIRG's caption post-processing: strip, then ``.`` -> dotmark, ``?`` -> questionmark,
    ``&`` -> andmark, ``*`` -> starmark."""
    return (
        caption.strip()
        .replace(".", "dotmark")
        .replace("?", "questionmark")
        .replace("&", "andmark")
        .replace("*", "starmark")
    )


def replace_text(source_caption: str, target_caption: str) -> tuple[str, str, str]:
    """TIRG's modification text: ``("X", "Y", "replace X with Y")``.

    X is the first word of the source caption absent from the target caption, Y the first word of
    the target caption absent from the source caption (whitespace split). As in TIRG, when every
    word is shared the last word of that caption is used.
    """
    src, tgt = source_caption.split(), target_caption.split()
    if not src or not tgt:
        raise ValueError(f"empty caption in query: {source_caption!r} -> {target_caption!r}")
    x = next((w for w in src if w not in tgt), src[-1])
    y = next((w for w in tgt if w not in src), tgt[-1])
    return x, y, f"replace {x} with {y}"


def product_id_of(rel_path: str) -> str:
    """The ``<pid>`` folder of ``women/<cat>/<sub>/<pid>/<pid>_<k>.jpeg``."""
    return Path(rel_path).parent.name


@dataclass
class Fashion200KEntry:
    """One image line of a label file.

    path: image path relative to the root.
    caption: the product description (stripped; TIRG post-processed when asked).
    product: the product id string (``<pid>`` folder name).
    category: the label file's category (``dress`` of ``dress_train_detect_all.txt``).
    """

    path: str
    caption: str
    product: str
    category: str


class Fashion200KImages(Dataset):
    """Fashion200K images as dict items.

    Items: ``image`` (3, S, S), ``product_id`` int, ``path``, ``subcategory`` (the category of the
    label file) and, with `pairs=True`, ``text``. A bad image under "skip" yields None (counted).

    Args:
        root: dataset root.
        entries: the images.
        product_index: product id string -> int.
        transform: PIL -> tensor transform.
        handle: bad-sample policy (raise, or count and log).
        pairs: include the caption.
    """

    def __init__(self, root: Path, entries: list[Fashion200KEntry], product_index: dict[str, int],
                 transform: ImageTransform, handle: Any, pairs: bool = True):
        self.root = root
        self.entries = entries
        self.product_index = product_index
        self.transform = transform
        self.handle = handle
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        e = self.entries[index]
        try:
            image = load_image(self.root / e.path)
        except BadSampleError as err:
            self.handle(err)
            return None
        item: dict[str, Any] = {
            "image": self.transform(image),  # (3, S, S)
            "product_id": self.product_index[e.product],
            "path": e.path,
            "subcategory": e.category,
        }
        if self.pairs:
            item["text"] = e.caption
        return item


@dataclass
class Fashion200KQuery:
    """A TIRG test query.

    source: source image path (relative). target: target image path (relative).
    source_caption, target_caption: their captions. text: "replace X with Y".
    """

    source: str
    target: str
    source_caption: str
    target_caption: str
    text: str


class Fashion200KQueries(Dataset):
    """Composed-retrieval queries: ``reference`` (3,S,S), ``text``, ``reference_id``, ``target_id``,
    ``target_caption`` (a hit is any retrieved image with this caption, DATASETS.md 6.4)."""

    def __init__(self, root: Path, queries: list[Fashion200KQuery], transform: ImageTransform, handle: Any):
        self.root = root
        self.queries = queries
        self.transform = transform
        self.handle = handle

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        q = self.queries[index]
        try:
            image = load_image(self.root / q.source)
        except BadSampleError as err:
            self.handle(err)
            return None
        return {
            "reference": self.transform(image),  # (3, S, S)
            "text": q.text,
            "reference_id": q.source,
            "target_id": q.target,
            "target_caption": q.target_caption,
        }


class Fashion200KDataModule(BaseDataModule):
    """Fashion200K image-caption pairs, product-level retrieval split and TIRG test queries.

    Args:
        root: dataset root (holds ``labels/``, ``women/``, ``test_queries.txt``).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        image_size: side of the square model input.
        target_pad_ratio: CLIP4Cir target-pad ratio.
        on_bad_sample: "raise" or "skip" (malformed label lines, missing images, corrupt images,
            unknown query paths are counted and logged).
        max_train_items: keep a seeded random subset of this many training images (None: all).
        seed: seed of the subset and of shuffling.
        augment: random horizontal flips on training images.
        tirg_captions: apply TIRG's caption post-processing (``.`` -> dotmark, ``&`` -> andmark...)
            to every caption; off by default (captions are only stripped).
        check_images: check at setup that every listed image file exists (missing ones are then
            raised/skipped before any index is built, keeping evaluation splits consistent).
    """

    dataset_name = "fashion200k"

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
        tirg_captions: bool = False,
        check_images: bool = True,
    ):
        super().__init__(root, batch_size, num_workers, image_size, target_pad_ratio, on_bad_sample, seed, augment)
        self.max_train_items = max_train_items
        self.tirg_captions = tirg_captions
        self.check_images = check_images
        self._entries: dict[str, list[Fashion200KEntry]] = {}

    @property
    def root_dir(self) -> Path:
        return require_dir(Path(self.root_path()), "labels/, women/ and test_queries.txt of Fashion200K")

    def label_files(self, split: str) -> list[Path]:
        """``labels/*_<split>_detect_all.txt``, sorted; FileNotFoundError naming the pattern if none."""
        if split not in SPLITS:
            raise ValueError(f"Fashion200K split must be one of {SPLITS}, got {split!r}")
        files = sorted((self.root_dir / "labels").glob(f"*_{split}_detect_all.txt"))
        if not files:
            raise FileNotFoundError(
                f"no Fashion200K label files {self.root_dir / 'labels'}/*_{split}_detect_all.txt; "
                "expected e.g. dress_{split}_detect_all.txt (tab-separated path, score, description)"
            )
        return files

    def entries(self, split: str) -> list[Fashion200KEntry]:
        """Every valid image line of the split's label files (read once)."""
        if split in self._entries:
            return self._entries[split]
        out: list[Fashion200KEntry] = []
        root = self.root_dir
        for path in self.label_files(split):
            category = path.name[: -len(f"_{split}_detect_all.txt")]
            for lineno, line in read_lines(path):
                if isinstance(line, BadSampleError):  # bytes that are not UTF-8
                    self.handle(line)
                    continue
                if not line.strip():
                    continue
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 3 or not fields[0].strip():
                    self.handle(BadSampleError(
                        f"{path}:{lineno}", "malformed_line",
                        f"expected 3 tab-separated fields (path, score, description), got {len(fields)}",
                    ))
                    continue
                if is_blank(fields[2]):
                    self.handle(BadSampleError(f"{path}:{lineno}", "empty_text",
                                               f"empty description for {fields[0].strip()}; line left out"))
                    continue
                rel = fields[0].strip()
                if self.check_images and not (root / rel).is_file():
                    self.handle(BadSampleError(root / rel, "missing_file", f"image listed in {path}:{lineno} not found"))
                    continue
                caption = tirg_postprocess(fields[2]) if self.tirg_captions else fields[2].strip()
                out.append(Fashion200KEntry(rel, caption, product_id_of(rel), category))
        self._entries[split] = out
        return out

    def product_index(self, split: str) -> dict[str, int]:
        """Product id string -> int (the number itself when numeric, else its rank in sorted order)."""
        products = sorted({e.product for e in self.entries(split)})
        if all(p.isdigit() for p in products):
            return {p: int(p) for p in products}
        return {p: i for i, p in enumerate(products)}

    def setup(self, stage: str | None = None) -> None:
        """Read the label files the stage needs."""
        for split in (("train", "test") if stage in (None, "fit") else ("test",)):
            self.entries(split)
        self.log_skips(f"setup({stage})")

    def pairs_dataset(self, split: str) -> Fashion200KImages:
        """Image-caption pairs (one per label line) of `split`."""
        entries = self.entries(split)
        if split == "train" and self.max_train_items is not None and self.max_train_items < len(entries):
            g = torch.Generator().manual_seed(self.seed)
            keep = sorted(torch.randperm(len(entries), generator=g)[: self.max_train_items].tolist())
            entries = [entries[i] for i in keep]
        transform = self.train_transform if split == "train" else self.eval_transform
        return Fashion200KImages(self.root_dir, entries, self.product_index(split), transform, self.skip_counter.handle)

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.pairs_dataset("train"), PAIRS, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.pairs_dataset("test"), PAIRS, shuffle=False)

    def retrieval_split(self, split: str = "test") -> RetrievalSplit:
        """Every image of `split`, one text per product (first line of the product)."""
        entries = self.entries(split)
        index = self.product_index(split)
        images = Fashion200KImages(self.root_dir, entries, index, self.eval_transform, self.skip_counter.handle, pairs=False)
        first: dict[str, Fashion200KEntry] = {}
        for e in entries:
            first.setdefault(e.product, e)
        return RetrievalSplit(
            images=images,
            texts=[e.caption for e in first.values()],
            text_product_ids=torch.tensor([index[p] for p in first], dtype=torch.long),  # (M,)
            text_subcategories=[e.category for e in first.values()],
            image_product_ids=torch.tensor([index[e.product] for e in entries], dtype=torch.long),  # (N,)
            image_subcategories=[e.category for e in entries],
        )

    def test_queries(self) -> Fashion200KQueries:
        """TIRG's test queries (``test_queries.txt``) with derived "replace X with Y" texts.

        Captions come from the test label files (post-processed when `tirg_captions`); a query
        whose path is not among the test images is a bad sample (raised, or counted and skipped).
        """
        path = self.root_dir / "test_queries.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected TIRG's test queries ('<source> <target>' per line)")
        captions = {e.path: e.caption for e in self.entries("test")}
        queries: list[Fashion200KQuery] = []
        for lineno, line in read_lines(path):
            if isinstance(line, BadSampleError):  # bytes that are not UTF-8
                self.handle(line)
                continue
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                self.handle(BadSampleError(f"{path}:{lineno}", "malformed_line",
                                           f"expected '<source path> <target path>', got {len(fields)} fields"))
                continue
            src, tgt = fields
            missing = [p for p in (src, tgt) if p not in captions]
            if missing:
                self.handle(BadSampleError(f"{path}:{lineno}", "missing_key",
                                           f"query image(s) {missing} not in the test label files"))
                continue
            try:
                _, _, text = replace_text(captions[src], captions[tgt])
            except ValueError as e:
                self.handle(BadSampleError(f"{path}:{lineno}", "malformed_line", str(e)))
                continue
            queries.append(Fashion200KQuery(src, tgt, captions[src], captions[tgt], text))
        return Fashion200KQueries(self.root_dir, queries, self.eval_transform, self.skip_counter.handle)

    def queries_dataloader(self) -> DataLoader:
        """A loader over `test_queries` (batch kind "queries")."""
        return self.make_loader(self.test_queries(), "queries", shuffle=False)
