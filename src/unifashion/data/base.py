"""What every dataset's LightningDataModule shares: loaders, tokenizer injection, skip policy."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from unifashion.data.collate import Collate
from unifashion.data.errors import BadSampleError, OnBadSample, SkipCounter
from unifashion.data.sampling import (
    BatchRoundRobinSampler,
    ResumableDataLoader,
    ResumableSampler,
    seeded_generator,
    world_of,
)
from unifashion.data.transforms import ImageTransform


class BaseDataModule(pl.LightningDataModule):
    """Common settings of the dataset modules.

    Args:
        root: dataset root directory (official layout, see data/README.md).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        image_size: side of the square model input.
        target_pad_ratio: CLIP4Cir target-pad ratio (see `ImageTransform`).
        on_bad_sample: "raise" (clear error naming the file) or "skip" (counted, logged skip).
        seed: seed of every random choice the module makes (subsets, caption joins, shuffling).
        augment: random horizontal flips on training images.
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
        seed: int = 0,
        augment: bool = False,
    ):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.target_pad_ratio = target_pad_ratio
        self.seed = seed
        self.skip_counter = SkipCounter(on_bad_sample, name=self.dataset_name)
        self.train_transform = ImageTransform(image_size, target_pad_ratio, augment=augment)
        self.eval_transform = ImageTransform(image_size, target_pad_ratio, augment=False)
        self.tokenizer: Any = None
        self.max_length = 64

    @property
    def on_bad_sample(self) -> OnBadSample:
        """The bad-sample policy ("raise" or "skip")."""
        return self.skip_counter.policy  # type: ignore[return-value]

    def set_tokenizer(self, tokenizer: Any, max_length: int) -> None:
        """Inject the tokenizer used by every loader made after this call (adds input_ids/attention_mask).

        Args:
            tokenizer: a Hugging Face tokenizer (fast or slow), called on lists of strings.
            max_length: texts are truncated to this many tokens.
        """
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def skip_counts(self) -> dict[str, int]:
        """Bad samples skipped so far, per reason (including skips inside DataLoader workers)."""
        return self.skip_counter.counts

    def log_skips(self, when: str) -> None:
        """Log the skip counts with `logging`."""
        self.skip_counter.log_summary(when)

    def handle(self, error: BadSampleError) -> None:
        """Apply the bad-sample policy to `error` (raise, or count and log)."""
        self.skip_counter.handle(error)

    def collate(self, kind: str) -> Collate:
        """A collate function of `kind` carrying the injected tokenizer."""
        return Collate(kind, self.dataset_name, self.tokenizer, self.max_length)

    def make_loader(self, dataset: Dataset, kind: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        """A DataLoader over `dataset` with this module's batch size, workers and collate.

        Shuffled (training) loaders are resumable: epoch e's order is ``randperm(N, seed + e)`` split
        over the processes, and the position in the epoch is checkpointed (`data.sampling`). Sequential
        (evaluation) loaders under DDP deal the single-process batches out whole to the processes, so
        nothing is repeated or dropped (`BatchRoundRobinSampler`).
        """
        world, rank = world_of(self._attached_trainer())
        common = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate(kind),
            drop_last=drop_last,
            persistent_workers=False,
            pin_memory=False,
        )
        if shuffle:
            sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, seed=self.seed, shuffle=True)
            return ResumableDataLoader(dataset, sampler=sampler, generator=seeded_generator(self.seed), **common)
        if world > 1:
            sampler = BatchRoundRobinSampler(dataset, self.batch_size, num_replicas=world, rank=rank)
            return DataLoader(dataset, sampler=sampler, **common)
        return DataLoader(dataset, shuffle=False, **common)

    def _attached_trainer(self):
        """The trainer this data module is attached to, or None (used outside Lightning)."""
        try:
            return self.trainer
        except (AttributeError, RuntimeError):
            return None

    def root_path(self) -> str:
        """`root` with ``~`` and environment variables expanded."""
        return os.path.expandvars(os.path.expanduser(self.root))

    def test_dataloader(self) -> DataLoader:
        """`unifashion test`: the evaluation split (FashionGen, Fashion-IQ and Fashion200K have no
        labelled test split the paper evaluates on: their validation/test loaders are the same)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """`unifashion predict`: the evaluation split, for embeddings (and captions)."""
        return self.val_dataloader()
