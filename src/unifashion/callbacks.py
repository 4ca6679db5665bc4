"""Training-safety callbacks: non-finite guard, RNG state in checkpoints, a resumable CSV logger.

- `NonFiniteGuard`: a NaN/inf loss term or gradient never reaches the optimizer. ``"raise"`` stops
  the run with `NonFiniteError` naming the step, the loss terms and the parameters at fault;
  ``"skip"`` drops the whole update (every gradient is cleared, so AdamW leaves weights and moments
  untouched), counts it and logs ``train/nonfinite_skips``. The decision is taken after the backward
  pass, on the gradients DDP has already averaged, so every process takes the same one.
- `RngStateCallback`: checkpoints carry the torch / numpy / python RNG states and the state of every
  `random.Random` held by a submodule (e.g. the captioner's instruction paraphrases), and a resumed
  run restores them before its first batch, so the negatives mined by ITM, the diffusion
  noise and the dropout masks after a resume are the ones the uninterrupted run draws.
- `ResumableCSVLogger`: a `CSVLogger` that, resumed into the same version folder, keeps the rows
  written before the interruption (Lightning's `CSVLogger` deletes ``metrics.csv`` of an existing
  version), drops those of the steps the resumed run redoes, and flushes every step and at every
  checkpoint, so ``metrics.csv`` has each step exactly once.

- `LoaderStateCallback`: works around Lightning dropping the checkpointed loader position when the
  loaders were built before the restore (``max_epochs`` set).

`UniFashionModule.configure_callbacks` adds the guard, the RNG and the loader-state callbacks to
every fit.
"""

from __future__ import annotations

import csv
import logging
import random
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)

OnNonFinite = Literal["raise", "skip"]


class NonFiniteError(RuntimeError):
    """A loss term or a gradient was NaN or infinite (the message names the step and what)."""


def _nonfinite(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all())


class NonFiniteGuard(Callback):
    """Stops (or skips) a training step whose loss terms or gradients are not finite.

    Reads the loss terms the module stored for the step (``pl_module.last_loss_terms``, a
    {name: tensor} dict) and the gradients of every trainable parameter in
    ``on_before_optimizer_step``.

    Args:
        policy: "raise" (`NonFiniteError` naming the step, terms and parameters) or "skip" (the
            update is dropped, counted in `skipped` and logged as ``train/nonfinite_skips``).
    """

    def __init__(self, policy: OnNonFinite = "raise") -> None:
        if policy not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {policy!r}")
        self.policy = policy
        self.skipped = 0
        self.skipped_steps: list[int] = []

    @property
    def state_key(self) -> str:
        return "NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.skipped_steps = list(state_dict.get("skipped_steps", []))

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        terms = getattr(pl_module, "last_loss_terms", None) or {}
        bad_terms = {k: float(v.detach().float().reshape(-1)[0]) for k, v in terms.items() if _nonfinite(v)}
        bad_params = [n for n, p in pl_module.named_parameters() if p.grad is not None and _nonfinite(p.grad)]
        if not bad_terms and not bad_params:
            return
        step = trainer.global_step
        what = []
        if bad_terms:
            what.append("loss term(s) " + ", ".join(f"{k}={v}" for k, v in bad_terms.items()))
        else:
            what.append("every local loss term is finite (the non-finite value comes from another process "
                        "or from the backward pass)")
        if bad_params:
            shown = ", ".join(bad_params[:5]) + (f" and {len(bad_params) - 5} more" if len(bad_params) > 5 else "")
            what.append(f"non-finite gradients in {len(bad_params)} parameter(s): {shown}")
        message = f"non-finite training step at global step {step} (epoch {trainer.current_epoch}): " + "; ".join(what)
        if self.policy == "raise":
            raise NonFiniteError(message + " (set model.on_nonfinite: skip to skip such steps instead)")
        for p in pl_module.parameters():
            p.grad = None  # AdamW skips parameters without a gradient: no update, moments untouched
        self.skipped += 1
        self.skipped_steps.append(step)
        log.warning("%s; update skipped (%d skipped so far)", message, self.skipped)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.policy == "skip":
            pl_module.log("train/nonfinite_skips", float(self.skipped), on_step=True, on_epoch=False)


def _random_attributes(module: torch.nn.Module) -> dict[str, random.Random]:
    """Every `random.Random` held as an attribute by `module` or a submodule, by dotted name."""
    found: dict[str, random.Random] = {}
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, random.Random):
                found[f"{name}.{attr}" if name else attr] = value
    return found


def _numpy_state() -> dict[str, Any]:
    """numpy's global MT19937 state as tensors and numbers (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]))


class RngStateCallback(Callback):
    """Saves the RNG states in checkpoints and restores them when a run resumes (module docstring).

    The states are captured when the checkpoint is written and applied in ``on_train_start`` of the
    resumed run (after the data loaders and their iterators are built, before the first batch is
    drawn), i.e. at the point where the uninterrupted run continued. (``on_train_epoch_start`` is
    not called when Lightning resumes mid-epoch.)
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._module: torch.nn.Module | None = None

    @property
    def state_key(self) -> str:
        return "RngStateCallback"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._module is not None:
            state["module_random"] = {k: r.getstate() for k, r in _random_attributes(self._module).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        _set_numpy_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        held = _random_attributes(pl_module)
        for name, value in state.get("module_random", {}).items():
            if name in held:
                held[name].setstate(value)


class LoaderStateCallback(Callback):
    """Gives resumable training loaders (`data.sampling.ResumableDataLoader`) their checkpointed state.

    Lightning restores the state of stateful loaders only when it builds the training loaders after
    the checkpoint was read. When ``max_epochs`` is set, `configure_optimizers` asking for
    ``trainer.estimated_stepping_batches`` builds them earlier, before the restore, and the saved
    position is silently dropped: a run resumed mid-epoch would redo the epoch's first batches. This
    callback hands the pending states to the loaders in ``on_train_start`` (their iterators are lazy,
    nothing has been drawn yet).
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fit_loop = trainer.fit_loop
        pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
        loader = getattr(fit_loop, "_combined_loader", None)
        if pending and loader is not None:
            loader._load_state_dicts(pending)
            fit_loop._combined_loader_states_to_load = []


class _ResumableWriter(ExperimentWriter):
    """`ExperimentWriter` that keeps an existing ``metrics.csv`` and, at the first row it logs,
    drops the existing rows of that step and every later one (they are being redone)."""

    def __init__(self, log_dir: str) -> None:
        self._trimmed = False
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        """Keep what an interrupted run wrote (the base class deletes it)."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if not self._trimmed and step is not None:
            self._trim_from(int(step))
        super().log_metrics(metrics_dict, step)

    def _trim_from(self, step: int) -> None:
        self._trimmed = True
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step", "") == "" or int(float(r["step"])) < step]
        self.metrics_keys = sorted(keys)
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` for runs that may be interrupted and resumed (module docstring).

    Give it a fixed ``version`` (e.g. ``version: run``) so the resumed run writes into the same
    folder. Rows are flushed every `flush_logs_every_n_steps` steps (default 1) and whenever a
    checkpoint is written, so a checkpoint never refers to steps missing from ``metrics.csv``.

    Args:
        save_dir: as `CSVLogger`.
        name: as `CSVLogger`.
        version: as `CSVLogger` (a fixed value is what makes a resume append to the same file).
        prefix: as `CSVLogger`.
        flush_logs_every_n_steps: write the buffered rows every this many steps.
    """

    def __init__(self, save_dir: str, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 1) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.save()
