"""Data modules for the official dataset layouts (see data/README.md and docs/DATASETS.md).

Names are imported lazily so that ``from unifashion.data.batch import ...`` stays cheap (the data
modules pull in Lightning and h5py).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PAIRS": "unifashion.data.batch",
    "TRIPLETS": "unifashion.data.batch",
    "RetrievalSplit": "unifashion.data.batch",
    "Collate": "unifashion.data.collate",
    "BadSampleError": "unifashion.data.errors",
    "SkipCounter": "unifashion.data.errors",
    "SkipReportCallback": "unifashion.data.errors",
    "Fashion200KDataModule": "unifashion.data.fashion200k",
    "FashionGenDataModule": "unifashion.data.fashiongen",
    "FashionIQDataModule": "unifashion.data.fashioniq",
    "CombinedDataModule": "unifashion.data.combined",
    "VitonHDDataModule": "unifashion.data.vitonhd",
    "ImageTransform": "unifashion.data.transforms",
    "denormalize": "unifashion.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unifashion.data' has no attribute {name!r}")
