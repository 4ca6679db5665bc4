"""Shared helpers of the synthetic writers: seeding, image files and the attribute sidecar.

Attribute sidecar
-----------------
Every dataset root gets ``attributes.jsonl``: one JSON object per written image (per product
view for FashionGen rows, per image file for Fashion200K / Fashion-IQ, per person id for
VITON-HD), in writing order, with keys:

- ``dataset``: "fashiongen" | "fashion200k" | "fashioniq" | "vitonhd";
- ``split``: the split as named by the dataset ("train"/"validation", "train"/"test",
  "train"/"val"/"test");
- ``image``: where the image lives, relative to the dataset root: ``<file>.h5#<row>`` for
  FashionGen, the label-file path for Fashion200K, ``images/<ASIN>.png`` for Fashion-IQ,
  ``<split>/image/<id>_00.jpg`` for VITON-HD;
- ``product_id`` (int) and ``view`` (int, index of the view of that product);
- ``garment``: every attribute of :class:`~unifashion.data.synthetic.attributes.Garment`
  (category, subcategory, kind, primary_colour, secondary_colour, pattern, sleeve_length,
  length, neckline, fit);
- ``captions``: ``{"professional", "short", "detailed"}`` (see captions.py);
- dataset extras: ``row`` (FashionGen), ``asin`` and ``categories`` (Fashion-IQ: every category
  whose split file lists the image), ``cloth`` / ``noun_chunks`` / ``person`` (VITON-HD).
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unifashion.data.synthetic.attributes import Garment
from unifashion.data.synthetic.captions import detailed, professional, short

Progress = Callable[[int], Any]
"""Called with the number of images just written (e.g. ``tqdm.update``)."""

SIDECAR = "attributes.jsonl"
"""File name of the attribute sidecar in every dataset root."""


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator seeded by `seed` and a path of keys (strings hashed with CRC32: stable)."""
    ints = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


def save_jpeg(img: Image.Image, path: Path, quality: int = 90) -> None:
    """Write a JPEG deterministically (no EXIF, fixed quality and subsampling)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality, subsampling=0, optimize=False)


def save_png(img: Image.Image, path: Path, compress_level: int = 1) -> None:
    """Write a PNG deterministically (no metadata chunks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    path.write_bytes(buf.getvalue())


def record(dataset: str, split: str, image: str, g: Garment, view: int, **extra: Any) -> dict[str, Any]:
    """One sidecar record (see module docstring)."""
    return {
        "dataset": dataset,
        "split": split,
        "image": image,
        "product_id": g.product_id,
        "view": view,
        "garment": g.attributes(),
        "captions": {"professional": professional(g), "short": short(g), "detailed": detailed(g)},
        **extra,
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records one JSON object per line (keys in insertion order, UTF-8)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (UTF-8, no trailing whitespace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (the sidecar) into a list of dicts."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
