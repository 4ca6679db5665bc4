"""Faults: kill -9 and resume gives the uninterrupted run; non-finite losses/gradients never train."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from fixtures_data import write_fashiongen
from tiny import tiny_encoder_config

from unifashion.callbacks import NonFiniteError, NonFiniteGuard
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig

REPO = Path(__file__).resolve().parents[1]
WORDS = "red blue green black white cotton silk wool shirt dress coat jeans skirt long short".split()


# ---------------------------------------------------------------------------------------- kill -9 and resume


def _write_products(root: Path, n: int = 10) -> None:
    """A FashionGen pair of files with `n` rows of `n` distinct products (any batch has negatives)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, rows in (("train", n), ("validation", 4)):
        descs = [" ".join(rng.choice(WORDS, size=4)).encode() for _ in range(rows)]
        with h5py.File(root / f"fashiongen_256_256_{split}.h5", "w") as f:
            f["input_image"] = rng.integers(0, 256, (rows, 16, 16, 3), dtype=np.uint8)
            f["input_description"] = np.array([[d] for d in descs], dtype="S64")
            f["input_name"] = np.array([[b"N"]] * rows, dtype="S4")
            f["input_category"] = np.array([[b"TOPS"]] * rows, dtype="S8")
            f["input_subcategory"] = np.array([[b"SHIRTS"]] * rows, dtype="S8")
            f["input_productID"] = np.arange(100, 100 + rows, dtype=np.int64)[:, None]


def _fit(run_dir: Path, data: Path, tok: Path, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(run_dir / "ckpt"), "every_n_train_steps": 2, "save_last": True,
                                "save_top_k": -1}}]
    if kill_at is not None:
        callbacks.append({"class_path": "fault_injection.KillAtStep", "init_args": {"step": kill_at}})
    enc = tiny_encoder_config(tok, qformer_dropout=0.1)  # dropout on: its masks come from the RNG too
    override = {
        "trainer": {"max_steps": 8, "max_epochs": 100, "log_every_n_steps": 1, "default_root_dir": str(run_dir),
                    "enable_progress_bar": False, "callbacks": callbacks,
                    "logger": {"class_path": "unifashion.callbacks.ResumableCSVLogger",
                               "init_args": {"save_dir": str(run_dir), "name": "logs", "version": "run"}}},
        "model": {"encoder": {k: getattr(enc, k) for k in ("tokenizer", "image_size", "patch_size",
                                                            "vision_hidden_size", "vision_layers", "vision_heads",
                                                            "vision_intermediate_size", "qformer_hidden_size",
                                                            "qformer_layers", "qformer_heads",
                                                            "qformer_intermediate_size", "num_query_tokens",
                                                            "embed_dim", "max_text_length", "qformer_dropout")},
                  "itm_max_pairs": None},
        "data": {"class_path": "unifashion.data.fashiongen.FashionGenDataModule",
                 "init_args": {"root": str(data), "batch_size": 3, "num_workers": 0, "image_size": 16}},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "override.yaml").write_text(yaml.safe_dump(override))
    cmd = [sys.executable, "-c", "import sys; from unifashion.cli import main; sys.exit(main(sys.argv[1:]))",
           "fit", "--config", str(REPO / "lightning_configs/tiny/phase1_retrieval.yaml"),
           "--config", str(run_dir / "override.yaml"), *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    return subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)


def _trainable(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _train_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "run" / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss_step")]


@pytest.mark.slow
def test_kill_9_and_resume_equals_uninterrupted_run(tmp_path):
    data, tok = tmp_path / "fashiongen", tmp_path / "tok"
    _write_products(data)
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, tok, vocab_size=200)

    plain = _fit(tmp_path / "plain", data, tok)
    assert plain.returncode == 0, plain.stderr[-3000:]

    killed = _fit(tmp_path / "resumed", data, tok, kill_at=5)  # 10 rows / batch 3: step 5 is mid-epoch 1
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    last = tmp_path / "resumed" / "ckpt" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    resumed = _fit(tmp_path / "resumed", data, tok, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for loaders without state

    a = _trainable(tmp_path / "plain" / "ckpt" / "last.ckpt")
    b = _trainable(tmp_path / "resumed" / "ckpt" / "last.ckpt")
    assert set(a) == set(b)
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"\nresume: max abs weight difference vs uninterrupted run {diff:.3e} over {len(a)} tensors")
    assert diff == 0.0

    rows_a, rows_b = _train_rows(tmp_path / "plain"), _train_rows(tmp_path / "resumed")
    steps_b = [int(r["step"]) for r in rows_b]
    assert steps_b == sorted(set(steps_b)), steps_b  # no duplicated step
    assert steps_b == [int(r["step"]) for r in rows_a] == list(range(8))  # none missing
    assert [r["train/loss_step"] for r in rows_b] == [r["train/loss_step"] for r in rows_a]


# ---------------------------------------------------------------------------------------- non-finite guard


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    write_fashiongen(root / "fashiongen", size=16)
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, root / "tok", vocab_size=200)
    return root


def _poisoned(monkeypatch, at_step: int, how: str) -> None:
    """Make the loss term "itc" NaN (how="loss") or give encoder.temp a NaN gradient with a finite loss
    (how="grad", d sqrt(x)/dx at 0) at global step `at_step`."""
    original = UniFashionModule.compute_losses

    def compute_losses(self, batch):
        terms = original(self, batch)
        if self.training and self.trainer.global_step == at_step:
            if how == "loss":
                terms["itc"] = terms["itc"] * float("nan")
            else:
                terms["itc"] = terms["itc"] + torch.sqrt(self.encoder.temp * 0)
        return terms

    monkeypatch.setattr(UniFashionModule, "compute_losses", compute_losses)


class _Snapshots(L.Callback):
    def __init__(self):
        self.before: dict[int, dict] = {}
        self.after: dict[int, dict] = {}

    def _weights(self, m):
        return {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = self._weights(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = self._weights(pl_module)


def _run(small, tmp_path, policy, steps=3):
    L.seed_everything(0)
    model = UniFashionModule(tiny_encoder_config(small / "tok"), loss_weights={"itm": 0.0},
                             optimizer=OptimizerConfig(lr=1e-3), on_nonfinite=policy)
    snaps = _Snapshots()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=0,
                        enable_model_summary=False, callbacks=[snaps])
    trainer.fit(model, FashionGenDataModule(str(small / "fashiongen"), batch_size=4, image_size=16))
    return trainer, snaps


@pytest.mark.parametrize("how", ["loss", "grad"])
def test_nonfinite_raises_naming_term_and_step(small, tmp_path, monkeypatch, how):
    _poisoned(monkeypatch, at_step=1, how=how)
    with pytest.raises(NonFiniteError) as err:
        _run(small, tmp_path, "raise")
    message = str(err.value)
    assert "global step 1" in message
    if how == "loss":
        assert "itc=nan" in message
    else:
        assert "every local loss term is finite" in message and "encoder.temp" in message


def test_nonfinite_skip_leaves_weights_untouched_and_counts(small, tmp_path, monkeypatch):
    _poisoned(monkeypatch, at_step=1, how="loss")
    trainer, snaps = _run(small, tmp_path, "skip")
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.policy == "skip" and guard.skipped == 1 and guard.skipped_steps == [1]
    assert float(trainer.logged_metrics["train/nonfinite_skips"]) == 1.0
    for step in (0, 1, 2):
        moved = [n for n in snaps.before[step] if not torch.equal(snaps.before[step][n], snaps.after[step][n])]
        assert (moved == []) == (step == 1), (step, moved[:3])  # only the poisoned step left the weights alone
    assert all(torch.isfinite(v).all() for v in snaps.after[2].values())


def test_on_nonfinite_is_validated(small):
    with pytest.raises(ValueError, match="on_nonfinite must be 'raise' or 'skip', got 'ignore'"):
        NonFiniteGuard("ignore")  # type: ignore[arg-type]
