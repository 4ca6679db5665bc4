"""`unifashion fit --config lightning_configs/tiny/phase2.yaml` runs (tiny synthetic Fashion-IQ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unifashion.cli import main
from unifashion.data.synthetic.fashioniq import FashionIQSpec, write_fashioniq
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_phase2_config_fits_with_every_term(tmp_path):
    write_fashioniq(tmp_path, FashionIQSpec(triplets={"train": 6, "val": 2, "test": 2}, size=(40, 56)), seed=1)
    base = tmp_path / "fashionIQ_dataset"
    texts = [c for f in (base / "captions").glob("*.json") for t in json.loads(f.read_text()) for c in t["captions"]]
    texts += [e["caption"] for f in base.glob("next_llava.*.json") for e in json.loads(f.read_text())]
    train_wordpiece_tokenizer(texts, tmp_path / "tok_q", vocab_size=300)
    train_bpe_tokenizer(texts, tmp_path / "tok_llm", vocab_size=300)
    run = tmp_path / "run"
    assert main([
        "fit", "--config", str(ROOT / "lightning_configs" / "tiny" / "phase2.yaml"),
        "--model.init_from", "null",
        "--model.encoder.tokenizer", str(tmp_path / "tok_q"),
        "--model.captioner.llm", "null", "--model.captioner.tokenizer", str(tmp_path / "tok_llm"),
        "--model.captioner.hidden_size", "32", "--model.captioner.num_layers", "1",
        "--model.generator.vae", "null",  # a tiny random VAE (the demo uses the one `data synth` writes)
        "--data.init_args.root", str(tmp_path), "--data.init_args.batch_size", "6",
        "--data.init_args.num_workers", "0",
        "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
    ]) == 0
    metrics = (next(run.rglob("metrics.csv"))).read_text()
    for term in ("cir_itc_img", "cir_itc_cap", "cir_itm", "itg", "denoise"):
        assert f"train/loss_{term}" in metrics
    assert next(run.rglob("last.ckpt")).is_file()
