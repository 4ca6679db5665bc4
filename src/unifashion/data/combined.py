"""Several datasets feeding one phase through Lightning's CombinedLoader of named loaders."""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.utilities.combined_loader import CombinedLoader


class CombinedDataModule(L.LightningDataModule):
    """Named data modules whose loaders are combined into one (DESIGN.md).

    Each training batch is a dict {name: batch}; the LightningModule computes every loss term of
    the phase on every batch of the kind the term consumes. Validation batches are dicts too
    (`val_dataloader`), each dataset's validation split served in full.

    Args:
        fashiongen: FashionGen image-caption pairs.
        fashion200k: Fashion200K image-caption pairs.
        fashioniq: Fashion-IQ triplets (phase 2) or Fashion-IQ-cap pairs.
        vitonhd: VITON-HD try-on / design samples.
        mode: how loaders of different lengths combine (Lightning CombinedLoader modes):
            "max_size_cycle" cycles the shorter ones; "min_size" stops at the shortest;
            "sequential" runs them one after another.
    """

    def __init__(
        self,
        fashiongen: L.LightningDataModule | None = None,
        fashion200k: L.LightningDataModule | None = None,
        fashioniq: L.LightningDataModule | None = None,
        vitonhd: L.LightningDataModule | None = None,
        mode: Literal["max_size_cycle", "min_size", "max_size", "sequential"] = "max_size_cycle",
    ) -> None:
        super().__init__()
        self.parts = {
            name: dm
            for name, dm in (
                ("fashiongen", fashiongen),
                ("fashion200k", fashion200k),
                ("fashioniq", fashioniq),
                ("vitonhd", vitonhd),
            )
            if dm is not None
        }
        if not self.parts:
            raise ValueError("CombinedDataModule needs at least one data module")
        self.mode = mode

    def set_tokenizer(self, tokenizer, max_length: int) -> None:
        for dm in self.parts.values():
            if hasattr(dm, "set_tokenizer"):
                dm.set_tokenizer(tokenizer, max_length)

    def prepare_data(self) -> None:
        for dm in self.parts.values():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        for dm in self.parts.values():
            dm.trainer = self.trainer
            dm.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.train_dataloader() for n, dm in self.parts.items()}, self.mode)

    def val_dataloader(self) -> CombinedLoader:
        """One validation loader over every part ("max_size": each batch is {name: batch}, a part whose
        loader is exhausted gives None), so the module logs per-dataset validation losses
        (``val/<name>/loss``) next to their item-weighted mean ``val/loss``, and ``limit_val_batches``
        counts combined batches. Sequential loaders would need a ``dataloader_idx`` everywhere and give
        Lightning's ``val/loss/dataloader_idx_<i>`` keys."""
        return CombinedLoader({n: dm.val_dataloader() for n, dm in self.parts.items()}, "max_size")

    def test_dataloader(self) -> CombinedLoader:
        """`unifashion test`: every part's test loader, combined as `val_dataloader` combines them."""
        return CombinedLoader({n: dm.test_dataloader() for n, dm in self.parts.items()}, "max_size")

    def predict_dataloader(self) -> CombinedLoader:
        """`unifashion predict`: every part's predict loader, one after another (Lightning's predict loop
        takes sequential loaders only; `predict_step` gets their ``dataloader_idx``)."""
        return CombinedLoader({n: dm.predict_dataloader() for n, dm in self.parts.items()}, "sequential")
