"""CUDA checks (marked `gpu`; run on a lent GPU: pytest -m gpu). Skipped where no CUDA device exists."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fixtures_data import write_fashiongen
from test_module import WORDS
from tiny import tiny_encoder_config

from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    write_fashiongen(root / "fashiongen", size=16)
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, root / "tok", vocab_size=200)
    return root


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fit_on_cuda(dirs, tmp_path, precision):
    L.seed_everything(0)
    model = UniFashionModule(tiny_encoder_config(dirs / "tok"), optimizer=OptimizerConfig(lr=1e-3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    trainer = L.Trainer(max_steps=3, accelerator="gpu", devices=1, precision=precision, logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.logged_metrics["train/loss_step"])
    after = model.cpu().state_dict()
    assert not torch.equal(before["encoder.temp"], after["encoder.temp"])


def test_losses_match_cpu(dirs):
    L.seed_everything(0)
    model = UniFashionModule(tiny_encoder_config(dirs / "tok")).eval()
    model.loss_weights = {"itc": 1.0, "itm": 0.0}  # ITM samples negatives: compare the deterministic term
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    dm.set_tokenizer(model.encoder.tokenizer, 16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        cpu = model.compute_losses(batch)["itc"]
        model.cuda()
        gpu_batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
        gpu = model.compute_losses(gpu_batch)["itc"].cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)


def test_captioning_fit_on_cuda_with_query_cache(dirs, tmp_path):
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.models.instructions import INSTRUCTIONS
    from unifashion.models.tokenizers import train_bpe_tokenizer

    corpus = [" ".join(WORDS), "USER: <Img> </Img> Assistant:", *(s for v in INSTRUCTIONS.values() for s in v)]
    train_bpe_tokenizer(corpus * 3, tmp_path / "ltok", vocab_size=300)
    L.seed_everything(0)
    model = UniFashionModule(
        tiny_encoder_config(dirs / "tok"), phase="phase1_captioning", query_cache_size=1000,
        captioner=CaptionerConfig(tokenizer=str(tmp_path / "ltok"), hidden_size=32, num_layers=1, num_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, lora_rank=4, lora_alpha=8,
                                  max_caption_tokens=16),
        optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1),
    )
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    trainer = L.Trainer(max_steps=8, accelerator="gpu", devices=1, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.logged_metrics["train/loss_step"])
    assert model.query_cache.hits > 0 and not any(m.training for m in model.encoder.modules())
    # cached outputs come back on the GPU and equal the encoder's (fit's teardown moved the model to the CPU)
    model.cuda()
    dm.set_tokenizer(model.encoder.tokenizer, 16)
    images = next(iter(dm.train_dataloader()))["image"].cuda()
    with torch.no_grad():
        direct = model.encoder.encode_image(images).query_output
    cached = model.query_cache(lambda x: model.encoder.encode_image(x).query_output, images)
    assert cached.device == direct.device
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-4)
