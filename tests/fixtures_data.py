"""Tiny dataset fixtures written in the official layouts (DATASETS.md), independent of the loaders.

Each writer returns a small dict describing what it wrote so tests can compare against it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def rgb(w: int, h: int, seed: int) -> Image.Image:
    """A random RGB image of w x h."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def truncated_png(path: Path) -> None:
    """A PNG cut in the middle of its pixel data (PIL opens it, decoding fails)."""
    buf = io.BytesIO()
    rgb(32, 32, 0).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# ---------------------------------------------------------------- FashionGen (section 1.5)

FG_TRAIN = [  # (product id, subcategory, description bytes) per row; rows of a product contiguous
    (101, b"SHIRTS", b"Caf\xe9 cotton shirt."),
    (101, b"SHIRTS", b"Caf\xe9 cotton shirt."),
    (101, b"SHIRTS", b"Caf\xe9 cotton shirt."),
    (102, b"SHIRTS", b"Striped shirt"),
    (102, b"SHIRTS", b"Striped shirt"),
    (103, b"JEANS", b"Blue jeans"),
    (103, b"JEANS", b"Blue jeans"),
]
FG_VAL = [
    (201, b"SHIRTS", b"Linen shirt na\xefve"),
    (201, b"SHIRTS", b"Linen shirt na\xefve"),
    (202, b"SHIRTS", b"Poplin shirt"),
    (202, b"SHIRTS", b"Poplin shirt"),
    (203, b"BELTS", b"Leather belt \xe9l\xe9gant"),  # singleton sub-category
]


def write_fashiongen(root: Path, drop_key: str | None = None, size: int = 16) -> None:
    """``fashiongen_256_256_{train,validation}.h5`` (images `size` x `size` to stay small)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", FG_TRAIN), ("validation", FG_VAL)):
        n = len(rows)
        cols = {
            "input_image": np.stack([np.full((size, size, 3), 10 * i, dtype=np.uint8) for i in range(n)]),
            "input_description": np.array([[r[2]] for r in rows], dtype="S64"),
            "input_concat_description": np.array([[r[2] + b" more"] for r in rows], dtype="S80"),
            "input_name": np.array([[b"NAME %d" % r[0]] for r in rows], dtype="S32"),
            "input_category": np.array([[b"TOPS"] for _ in rows], dtype="S16"),
            "input_subcategory": np.array([[r[1]] for r in rows], dtype="S16"),
            "input_productID": np.array([[r[0]] for r in rows], dtype=np.int64),
            "input_pose": np.array([[b"id_gridfs_%d" % i] for i in range(n)], dtype="S16"),
            "input_msrpUSD": np.ones((n, 1), dtype=np.float32),
            "index": np.arange(n, dtype=np.int64)[:, None],
            "index_2": np.arange(n, dtype=np.int64),
        }
        with h5py.File(root / f"fashiongen_256_256_{split}.h5", "w") as f:
            for k, v in cols.items():
                if k != drop_key:
                    f.create_dataset(k, data=v)


# ---------------------------------------------------------------- Fashion200K (section 3.5)

F200_TRAIN = [  # (relative path, description)
    ("women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg", "black & white dress."),
    ("women/dresses/casual_and_day_dresses/51727804/51727804_1.jpeg", "black & white dress."),
    ("women/dresses/cocktail_dresses/51727900/51727900_0.jpeg", "red lace dress"),
    ("women/dresses/cocktail_dresses/51727900/51727900_1.jpeg", "red lace dress"),
]
F200_TEST = [
    ("women/dresses/cocktail_dresses/60000001/60000001_0.jpeg", "blue lace dress"),
    ("women/dresses/cocktail_dresses/60000001/60000001_1.jpeg", "blue lace dress"),
    ("women/dresses/cocktail_dresses/60000002/60000002_0.jpeg", "green lace dress"),
    ("women/dresses/cocktail_dresses/60000003/60000003_0.jpeg", "blue silk dress"),
]
F200_QUERIES = [
    (F200_TEST[0][0], F200_TEST[2][0]),  # blue -> green
    (F200_TEST[2][0], F200_TEST[3][0]),  # green lace -> blue silk: first differing words
]


def write_fashion200k(root: Path) -> None:
    """``labels/dress_{train,test}_detect_all.txt``, ``women/...`` JPEGs and ``test_queries.txt``."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", F200_TRAIN), ("test", F200_TEST)):
        lines = [f"{p}\t-1.780000\t{d}\n" for p, d in rows]
        (root / "labels" / f"dress_{split}_detect_all.txt").write_text("".join(lines))
        for i, (p, _) in enumerate(rows):
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            rgb(20 + i, 30, i).save(root / p, format="JPEG")
    (root / "test_queries.txt").write_text("".join(f"{s} {t}\n" for s, t in F200_QUERIES))


# ---------------------------------------------------------------- Fashion-IQ (section 2.7)

FIQ_SPLITS = {  # category -> split -> ASINs
    "dress": {"train": ["D1", "D2", "D3"], "val": ["D4", "D5", "D6"], "test": ["D7", "D8"]},
    "shirt": {"train": ["S1", "S2"], "val": ["S3", "X1", "S4"], "test": ["S5", "S6"]},
    "toptee": {"train": ["T1", "T2"], "val": ["T3", "X1"], "test": ["T4", "T5"]},  # X1 shared with shirt
}
FIQ_CAPTIONS = {
    "dress": {
        "train": [
            {"candidate": "D1", "target": "D2", "captions": ["Is Longer.", " has red FLOWERS ?"]},
            {"candidate": "D2", "target": "D3", "captions": ["is shorter", "  "]},  # whitespace caption
        ],
        "val": [
            {"candidate": "D4", "target": "D5", "captions": [" yello and more flowing", "is darker,"]},
            {"candidate": "D6", "target": "D4", "captions": ["", "is blue."]},  # empty caption
        ],
        "test": [{"candidate": "D7", "captions": ["is white", "has sleeves"]}],
    },
    "shirt": {
        "train": [{"candidate": "S1", "target": "S2", "captions": ["is plain", "no logo"]}],
        "val": [{"candidate": "S3", "target": "X1", "captions": ["is striped", "has buttons"]}],
        "test": [{"candidate": "S5", "captions": ["is grey", "is longer"]}],
    },
    "toptee": {
        "train": [{"candidate": "T1", "target": "T2", "captions": ["is pink", "has a bow"]}],
        "val": [{"candidate": "X1", "target": "T3", "captions": ["Is Shinier", "is cropped"]}],
        "test": [{"candidate": "T4", "captions": ["is black", "has text"]}],
    },
}


def fiq_all_asins() -> list[str]:
    return sorted({a for cat in FIQ_SPLITS.values() for ids in cat.values() for a in ids})


def write_fashioniq(parent: Path, png: tuple[str, ...] = ("D1", "D4", "X1", "S3")) -> Path:
    """``parent/fashionIQ_dataset/{captions,image_splits,images}``; ASINs in `png` saved as .png,
    the rest as .jpg (images of differing sizes). Returns the ``fashionIQ_dataset`` directory."""
    root = parent / "fashionIQ_dataset"
    for sub in ("captions", "image_splits", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for cat, splits in FIQ_SPLITS.items():
        for split, ids in splits.items():
            (root / "image_splits" / f"split.{cat}.{split}.json").write_text(json.dumps(ids))
            (root / "captions" / f"cap.{cat}.{split}.json").write_text(json.dumps(FIQ_CAPTIONS[cat][split]))
    for i, asin in enumerate(fiq_all_asins()):
        ext, fmt = (".png", "PNG") if asin in png else (".jpg", "JPEG")
        rgb(24 + i, 40 - i, i).save(root / "images" / f"{asin}{ext}", format=fmt)
    return root


# ---------------------------------------------------------------- tokenizer


def tiny_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (ids: [PAD]=0, [UNK]=1, then `words` in order)."""
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
