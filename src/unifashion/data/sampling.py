"""Samplers and a loader that make training resumable and evaluation exact under DDP.

Training (`ResumableSampler` + `ResumableDataLoader`): the order of epoch e is
``randperm(N, seed + e)`` split over the processes (`DistributedSampler`'s rule; one process:
the whole permutation), so it depends on nothing but the seed and the epoch. The loader reports
how many batches of the current epoch it has handed out (`state_dict`); Lightning stores that in
every checkpoint and gives it back on resume (`load_state_dict`), and the sampler then starts the
epoch after those batches. A run resumed mid-epoch therefore sees exactly the batches the
uninterrupted run sees.

Evaluation (`BatchRoundRobinSampler`): the single-process batches (in order, the last one
partial) are dealt out whole, batch j to process ``j % world``. No sample is repeated or dropped
(Lightning's default `DistributedSampler` pads by repeating samples) and every batch is exactly a
batch of the single-process run, so per-batch losses and their weighted mean are the same on 1 and
N processes. Processes may then run different numbers of batches: validation must not
communicate per batch (`UniFashionModule.validation_step` computes its losses locally).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (seeded per epoch) that can start an epoch after `skip` of its indices.

    Args:
        dataset: the dataset.
        num_replicas: number of processes (1 without DDP).
        rank: this process's rank.
        seed: the shuffling seed (order of epoch e: ``randperm(N, seed + e)``).
        shuffle: shuffle (training) or keep the dataset order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # applies to one pass only
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A `DataLoader` over a `ResumableSampler` whose position in the epoch is checkpointed.

    Lightning treats a loader with `state_dict` / `load_state_dict` as resumable: it saves the state
    in every checkpoint and restores it before the first batch of a resumed run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(self.sampler).__name__}")
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:
        self._batches = self.sampler.skip // self.batch_size if self.batch_size else 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """{"epoch": the sampler's epoch, "batches": batches handed out in that epoch so far}."""
        return {"epoch": int(self.sampler.epoch), "batches": int(self._batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after ``state["batches"]`` batches (a finished epoch: from
        the start of the next one, whose epoch Lightning sets)."""
        batches = int(state.get("batches", 0))
        self.sampler.set_epoch(int(state.get("epoch", 0)))
        self.sampler.skip = 0 if batches >= len(self) else batches * (self.batch_size or 1)


class BatchRoundRobinSampler(DistributedSampler):
    """Deals the single-process batches of a sequential pass out to the processes (module docstring).

    Args:
        dataset: the dataset (kept in order).
        batch_size: the loader's batch size (must match the DataLoader's).
        num_replicas: number of processes.
        rank: this process's rank.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        n = len(dataset)  # type: ignore[arg-type]
        n_batches = math.ceil(n / batch_size)
        self._indices = [
            i
            for j in range(rank, n_batches, num_replicas)
            for i in range(j * batch_size, min((j + 1) * batch_size, n))
        ]
        self.num_samples = len(self._indices)
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return self.num_samples


def world_of(trainer: Any) -> tuple[int, int]:
    """(world size, global rank) of an attached Lightning trainer; (1, 0) without one."""
    if trainer is None:
        return 1, 0
    return int(getattr(trainer, "world_size", 1) or 1), int(getattr(trainer, "global_rank", 0) or 0)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (DataLoader draws its worker base seed from it)."""
    return torch.Generator().manual_seed(seed)
