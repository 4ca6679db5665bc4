"""Captioning pipeline: phase1_captioning fit from a retrieval checkpoint, run_fic, `unifashion caption`."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from fixtures_data import FG_VAL, write_fashiongen
from PIL import Image
from tiny import tiny_encoder_config

from unifashion.api import UniFashion
from unifashion.cli import main
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.models.captioner import CaptionerConfig
from unifashion.models.encoder import EncoderConfig
from unifashion.models.instructions import INSTRUCTIONS
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig
from unifashion.tasks.fic.evaluate import run_fic
from unifashion.tasks.fic.protocol import caption_metrics

CHEAP = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")  # no METEOR: its JVM start is slow
CORPUS = ["Café cotton shirt.", "Striped shirt", "Blue jeans", "Linen shirt naïve", "Poplin shirt",
          "Leather belt élégant", "USER: <Img> </Img> Assistant:"] + [s for v in INSTRUCTIONS.values() for s in v]


def encoder_config(tok: Path) -> EncoderConfig:
    return tiny_encoder_config(tok, freeze_vision=True)


def captioner_config(tok: Path) -> CaptionerConfig:
    return CaptionerConfig(tokenizer=str(tok), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                           max_position_embeddings=128, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                           max_caption_tokens=16)


def write_caption_fixture(root: Path) -> Path:
    """FashionGen fixture + Q-Former (qtok) and LLM (ltok) tokenizers under `root`."""
    write_fashiongen(root / "fashiongen", size=16)
    train_wordpiece_tokenizer(CORPUS * 3, root / "qtok", vocab_size=200)
    train_bpe_tokenizer(CORPUS * 3, root / "ltok", vocab_size=300)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = write_caption_fixture(tmp_path_factory.mktemp("cap"))
    # an earlier phase1_retrieval checkpoint (only its state dict is read by init_from)
    L.seed_everything(0)
    retrieval = UniFashionModule(encoder_config(root / "qtok"))
    torch.save({"state_dict": retrieval.state_dict()}, root / "retrieval.ckpt")
    return root


@pytest.fixture(scope="module")
def trained(dirs, tmp_path_factory):
    """A phase1_captioning module initialised from the retrieval checkpoint and trained 25 steps."""
    L.seed_everything(0)
    model = UniFashionModule(
        encoder_config(dirs / "qtok"), captioner=captioner_config(dirs / "ltok"), phase="phase1_captioning",
        optimizer=OptimizerConfig(lr=1e-2, min_lr=1e-3, weight_decay=0.0, warmup_steps=2),
        init_from=str(dirs / "retrieval.ckpt"),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    out = tmp_path_factory.mktemp("fit")
    logger = L.pytorch.loggers.CSVLogger(out, name="logs")
    trainer = L.Trainer(max_steps=25, max_epochs=100, accelerator="cpu", logger=logger, log_every_n_steps=1,
                        enable_progress_bar=False, default_root_dir=out, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, dm)
    ckpt = out / "captioning.ckpt"
    trainer.save_checkpoint(ckpt)
    return model, before, trainer, ckpt


def test_init_from_loads_and_freezes_encoder(dirs, trained):
    model, before, _, _ = trained
    reference = torch.load(dirs / "retrieval.ckpt", weights_only=False)["state_dict"]
    for k, v in reference.items():  # encoder = retrieval weights, untouched by the captioning phase
        assert torch.equal(before[k], v), k
        assert torch.equal(model.state_dict()[k], v), k
    assert not any(p.requires_grad for p in model.encoder.parameters())
    moved = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.startswith("captioner.text_adapter.") for k in moved)
    assert any("lora_" in k for k in moved)
    base = {k for k in moved if k.startswith("captioner.language_model.") and "lora_" not in k}
    assert not base, f"the frozen base LM moved: {sorted(base)[:3]}"


def test_itg_loss_decreases(trained):
    *_, trainer, _ = trained
    import csv

    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    losses = [float(r["train/loss_itg_step"]) for r in rows if r.get("train/loss_itg_step")]
    assert len(losses) >= 20
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.6 * first, (first, last)


def test_run_fic_matches_direct_scoring(dirs, trained):
    model, *_ = trained
    examples: list[tuple[str, str]] = []
    metrics = run_fic(UniFashion(model), dirs, prefix="baseline/", metrics=CHEAP, examples=examples)
    assert set(metrics) == {f"baseline/fic/fashiongen/{m}" for m in CHEAP}
    # one reference per product: the fixture's validation descriptions, in product order
    refs = list(dict.fromkeys(r[2].decode("latin-1") for r in FG_VAL))
    assert [ref for _, ref in examples] == refs
    # predictions = the captioner's greedy captions of each product's first image (rows 0, 2, 4)
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    images = dm.retrieval_split("validation").images
    pixels = torch.stack([images[i]["image"] for i in (0, 2, 4)])
    assert model.training  # run_fic restores the mode it found
    model.eval()
    with torch.no_grad():
        queries = model.encoder.encode_image(pixels).query_output
        direct = model.captioner.generate(queries, ["fashiongen"] * 3, max_new_tokens=48)
    assert [pred for pred, _ in examples] == direct
    expected = caption_metrics({i: p for i, p in enumerate(direct)}, {i: [r] for i, r in enumerate(refs)},
                               metrics=CHEAP)
    for name, value in expected.items():
        assert metrics[f"baseline/fic/fashiongen/{name}"] == pytest.approx(value)
    assert all(0.0 <= v <= 100.0 for k, v in metrics.items() if "CIDEr" not in k)


def test_caption_command_writes_captions_json(dirs, trained, tmp_path):
    model, _, _, ckpt = trained
    folder = tmp_path / "images"
    folder.mkdir()
    for i, value in enumerate((30, 200)):
        Image.fromarray(np.full((20, 20, 3), value, dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "captions.json"
    assert main(["caption", "--ckpt", str(ckpt), "--images", str(folder), "--out", str(out)]) == 0
    captions = json.loads(out.read_text())
    assert sorted(captions) == ["img0.png", "img1.png"]
    # the reloaded checkpoint captions exactly like the trained module (same preprocessing by hand)
    pixels = []
    for name in sorted(captions):
        img = Image.open(folder / name).convert("RGB")
        arr = torch.from_numpy(np.asarray(img.resize((16, 16), Image.BICUBIC), dtype=np.float32) / 255.0)
        pixels.append(arr.permute(2, 0, 1))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    pixels = (torch.stack(pixels) - mean) / std
    model.eval()
    with torch.no_grad():
        queries = model.encoder.encode_image(pixels).query_output
        direct = model.captioner.generate(queries, ["fashiongen"] * 2, max_new_tokens=40)
    assert [captions[n] for n in sorted(captions)] == direct


def test_caption_command_rejects_empty_folder(trained, tmp_path):
    *_, ckpt = trained
    with pytest.raises(FileNotFoundError, match="no images"):
        main(["caption", "--ckpt", str(ckpt), "--images", str(tmp_path), "--out", str(tmp_path / "c.json")])


