"""Collate functions producing the batch dicts of `unifashion.data.batch`.

Items are dicts produced by the datasets. ``None`` items (bad samples skipped under
``on_bad_sample="skip"``, already counted and logged by the dataset) are removed; a batch in which
every item was skipped collates to ``None``.

When a tokenizer was injected (``DataModule.set_tokenizer``), the text is tokenised here, padded to
the longest text of the batch and truncated to ``max_length``; datasets never tokenise.
"""

from __future__ import annotations

from typing import Any

import torch

from unifashion.data.batch import DATASETS, PAIRS, TRIPLETS


class Collate:
    """Stack dataset items into a batch dict.

    Args:
        kind: "pairs" (image-caption pairs), "triplets" (composed retrieval), "images" (gallery
            images: ``image`` plus ids) or "queries" (composed-retrieval queries without a target
            image).
        dataset: dataset name written to ``batch["dataset"]`` (one of `DATASETS`).
        tokenizer: a Hugging Face tokenizer (callable on a list of strings), or None.
        max_length: truncation length for the tokenizer.
    """

    KINDS = (PAIRS, TRIPLETS, "images", "queries")

    def __init__(self, kind: str, dataset: str, tokenizer: Any = None, max_length: int = 64):
        if kind not in self.KINDS:
            raise ValueError(f"collate kind must be one of {self.KINDS}, got {kind!r}")
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        self.kind = kind
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.max_length = max_length

    def _tokenize(self, batch: dict[str, Any]) -> None:
        if self.tokenizer is None or "text" not in batch:
            return
        enc = self.tokenizer(
            batch["text"],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = enc["input_ids"].long()  # (B, L)
        batch["attention_mask"] = enc["attention_mask"].long()  # (B, L)

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        items = [it for it in items if it is not None]
        if not items:
            return None
        batch: dict[str, Any] = {"kind": self.kind, "dataset": self.dataset}
        for key in items[0]:
            values = [it[key] for it in items]
            first = values[0]
            if isinstance(first, torch.Tensor):
                batch[key] = torch.stack(values)  # (B, ...)
            elif key == "product_id":
                batch[key] = torch.tensor(values, dtype=torch.long)  # (B,)
            else:
                batch[key] = values
        self._tokenize(batch)
        return batch
