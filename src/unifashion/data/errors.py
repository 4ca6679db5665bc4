"""Bad-sample policy shared by every dataset: raise a clear error, or count and log a skip.

Nothing is dropped silently. With ``on_bad_sample="raise"`` the first problem raises a
`BadSampleError` that names the file and what was expected there. With ``"skip"`` the problem is
logged (with the same message) and counted per reason in a `SkipCounter`; the data module exposes
the counts (`skip_counts`) and logs a summary after `setup` and, through `SkipReportCallback`, at
the end of every epoch.

Counts live in a shared-memory tensor guarded by a lock, so skips that happen inside DataLoader
worker processes are visible in the main process.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

OnBadSample = Literal["raise", "skip"]

REASONS = (
    "missing_file",  # an image or annotation file that should exist does not
    "corrupt_image",  # an image file that PIL cannot decode (truncated bytes, not an image)
    "malformed_json",  # a JSON file that does not parse or has the wrong structure
    "malformed_data",  # an HDF5 dataset with the wrong shape or row count
    "malformed_line",  # a line of a text annotation file with the wrong number of fields
    "missing_key",  # a key (HDF5 dataset, JSON field, caption id) that should be present
    "corrupt_file",  # a file that cannot be read at all (truncated HDF5, not an HDF5 file)
    "bad_encoding",  # text bytes that are not valid in the file's documented encoding
    "empty_text",  # an empty (or whitespace-only) caption / description, the item's training text
)


def _spawning() -> bool:
    """True while a worker process is being started (locks may then be pickled)."""
    from multiprocessing import context

    return context.get_spawning_popen() is not None


class BadSampleError(Exception):
    """A dataset file or item is missing or malformed.

    Attributes:
        path: the file at fault.
        reason: one of `REASONS`.
        detail: what was expected there.
    """

    def __init__(self, path: str, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-sample reason {reason!r}; expected one of {REASONS}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {detail} [{reason}]")


class SkipCounter:
    """The raise-or-skip policy plus process-shared skip counts.

    Args:
        policy: "raise" re-raises every `BadSampleError`; "skip" logs and counts it.
        name: a label for log lines (the dataset name).
    """

    def __init__(self, policy: OnBadSample = "raise", name: str = "data"):
        if policy not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {policy!r}")
        self.policy = policy
        self.name = name
        self._counts = torch.zeros(len(REASONS), dtype=torch.int64).share_memory_()  # (R,)
        self._lock = multiprocessing.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if not _spawning():
            state["_lock"] = None  # plain pickling (not a worker start): an independent copy
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._lock is None:
            self._lock = multiprocessing.Lock()

    def handle(self, error: BadSampleError) -> None:
        """Raise `error` under the "raise" policy; otherwise log and count it."""
        if self.policy == "raise":
            raise error
        with self._lock:
            self._counts[REASONS.index(error.reason)] += 1
        log.warning("%s: skipped bad sample: %s", self.name, error)

    @property
    def counts(self) -> dict[str, int]:
        """Skips so far per reason (reasons with zero skips included)."""
        return {reason: int(c) for reason, c in zip(REASONS, self._counts.tolist())}

    @property
    def total(self) -> int:
        """Total number of skips so far."""
        return int(self._counts.sum())

    def log_summary(self, when: str) -> None:
        """Log the skip counts (a warning when anything was skipped)."""
        nonzero = {k: v for k, v in self.counts.items() if v}
        if nonzero:
            log.warning("%s: %d bad samples skipped so far (%s): %s", self.name, self.total, when, nonzero)
        else:
            log.info("%s: no bad samples skipped (%s)", self.name, when)


class SkipReportCallback(Callback):
    """Logs the data module's skip counts at the end of every train/validation epoch.

    Calls ``trainer.datamodule.log_skips(...)`` and logs ``data/skipped`` to the trainer's logger
    when the data module has a ``skip_counter``.
    """

    def _report(self, trainer: Trainer, pl_module: LightningModule, when: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        counter = getattr(dm, "skip_counter", None)
        if counter is None:
            return
        counter.log_summary(when)
        pl_module.log("data/skipped", float(counter.total), rank_zero_only=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, f"end of train epoch {trainer.current_epoch}")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, f"end of validation epoch {trainer.current_epoch}")
