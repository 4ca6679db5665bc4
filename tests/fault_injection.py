"""Callbacks that break a run on purpose (used by tests/test_resume.py through the CLI)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILLs its own process (no clean-up, like ``kill -9``) when training step `step` starts.

    Args:
        step: the global step (optimizer steps done so far) at which to die.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
