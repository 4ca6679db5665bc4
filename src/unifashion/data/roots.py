"""Where each dataset lives under a data root: a synthetic root holds one folder per dataset
(`fashiongen/`, `fashion200k/`, `fashioniq/`, `vitonhd/`); a real root may be the dataset folder itself."""

from __future__ import annotations

from pathlib import Path

DATASET_FOLDERS = ("fashiongen", "fashion200k", "fashioniq", "vitonhd")


def dataset_root(root: str | Path, name: str) -> Path:
    """``root/name`` when that folder exists (a synthetic root), else `root` itself."""
    if name not in DATASET_FOLDERS:
        raise ValueError(f"unknown dataset folder {name!r}; known: {DATASET_FOLDERS}")
    root = Path(root)
    return root / name if (root / name).is_dir() else root


def fashiongen_root(root: str | Path) -> Path:
    """The FashionGen folder of a synthetic root (``root/fashiongen``), or `root` itself."""
    return dataset_root(root, "fashiongen")
