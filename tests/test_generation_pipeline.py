"""Image generation end to end: pixel-space diffusion, a phase1_image_generation fit through
UniFashionModule, run_fig, `unifashion generate`, and one finetune_tryon step on VITON-HD."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from fixtures_data import FG_VAL, write_fashiongen
from fixtures_vitonhd import write_vitonhd
from PIL import Image
from tiny import tiny_encoder_config

from unifashion.api import UniFashion
from unifashion.cli import main
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.data.synthetic.attributes import COLOURS
from unifashion.data.vitonhd import VitonHDDataModule
from unifashion.models.encoder import EncoderConfig
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig
from unifashion.tasks.fig.evaluate import run_fig, save_grid

WORDS = "linen shirt poplin leather belt red cotton top crew neck blue striped black white tank".split()
GEN = dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8, block_out_channels=(16, 32),
           attention_from_block=0, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
           num_train_timesteps=100, guidance_scale=2.0)


def encoder_config(tok: Path) -> EncoderConfig:
    return tiny_encoder_config(tok, freeze_vision=True)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    write_fashiongen(root / "fashiongen", size=16)
    # a colour sidecar like the synthetic benchmark's: validation rows 0 and 1 of product 201, 2-3 of 202 ...
    colours = ["white", "white", "black", "black", "grey"]
    with open(root / "fashiongen" / "attributes.jsonl", "w") as f:
        for i, c in enumerate(colours[: len(FG_VAL)]):
            f.write(json.dumps({"split": "validation", "image": f"fashiongen_256_256_validation.h5#{i}",
                                "garment": {"primary_colour": c}}) + "\n")
    # validation images: a garment square in the requested colour on a grey background, except row 4 (uniform)
    with h5py.File(root / "fashiongen" / "fashiongen_256_256_validation.h5", "r+") as f:
        imgs = f["input_image"][...]
        imgs[:] = 180
        for i, c in enumerate(colours[:4]):
            imgs[i, 4:12, 4:12] = COLOURS[c]
        f["input_image"][...] = imgs
    tok = root / "tok"
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, tok, vocab_size=200)
    return root, tok


def test_pixel_space_has_no_vae_and_matches_hand_computed_ddpm_loss():
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(**GEN), query_dim=12).eval()
    assert gen.vae is None and gen.vae_scale_factor == 1 and gen.latent_channels == 3
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(gen.encode_images(x), x)
    assert torch.allclose(gen.decode_latents(x), (x + 1) / 2)
    # linear betas of Ho et al. 2020, computed by hand
    betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    q, noise, t = torch.randn(2, 4, 12), torch.randn(2, 3, 8, 8), torch.tensor([3, 90])
    loss = gen.denoise_loss(q, x, noise=noise, timesteps=t)["denoise"]
    a = abar[t].float()[:, None, None, None]
    noisy = a.sqrt() * x + (1 - a).sqrt() * noise
    pred = gen.unet(noisy, t, encoder_hidden_states=gen.image_adapter(q)).sample
    assert torch.allclose(loss, torch.nn.functional.mse_loss(pred, noise), atol=1e-5)
    with pytest.raises(ValueError, match="pixel_space"):
        GeneratorConfig(pixel_space=True, vae="some/vae")


def test_pixel_space_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(**GEN, variant="tryon"), query_dim=12).eval()
    assert gen.unet.conv_in.in_channels == 3 + 1 + 3  # noisy pixels, mask, masked person
    gen.save_pretrained(tmp_path / "g")
    assert not (tmp_path / "g" / "vae").exists()
    again = Generator.from_pretrained(tmp_path / "g").eval()
    q = torch.randn(1, 4, 12)
    cond = {"person": torch.rand(1, 3, 8, 8) * 2 - 1, "inpaint_mask": torch.ones(1, 1, 8, 8)}
    kw = dict(sampler="ddim", steps=3, latents=torch.randn(1, 3, 8, 8))
    assert torch.allclose(gen.sample(q, cond, **kw), again.sample(q, cond, **kw), atol=1e-6)


def test_fit_run_fig_and_generate_command(dirs, tmp_path):
    root, tok = dirs
    L.seed_everything(0)
    retrieval = UniFashionModule(encoder_config(tok))
    init = tmp_path / "retrieval.ckpt"
    torch.save({"state_dict": retrieval.state_dict()}, init)
    model = UniFashionModule(encoder_config(tok), generator=GEN, phase="phase1_image_generation",
                             init_from=str(init), optimizer=OptimizerConfig(lr=1e-3))
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert all(torch.equal(v, retrieval.encoder.state_dict()[k]) for k, v in enc_before.items())
    gen_before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    dm = FashionGenDataModule(root=str(root / "fashiongen"), batch_size=4, image_size=16)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.logged_metrics["train/loss_denoise_step"])
    # the Q-Former is frozen in this phase; the UNet and the image adapter learn
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in enc_before.items())
    moved = {k for k, v in model.generator.state_dict().items() if not torch.equal(gen_before[k], v)}
    assert "image_adapter.weight" in moved and any(k.startswith("unet.") for k in moved)

    model.train()
    metrics = run_fig(UniFashion(model), root, tmp_path / "fig", max_items=3, steps=2, batch_size=2,
                      grid_path=tmp_path / "grid.png")
    assert model.training and model.generator.training  # evaluation hands the model back as it found it
    assert {"fig/fashiongen/queries/FID-proxy", "fig/fashiongen/queries/KID-proxy"} <= set(metrics)
    # products 201 (white square), 202 (black square), 203 (uniform: a counted miss)
    assert metrics["fig/fashiongen/real/colour_acc"] == pytest.approx(200 / 3)
    assert 0 <= metrics["fig/fashiongen/queries/colour_acc"] <= 100
    assert len(list((tmp_path / "fig" / "unpaired").glob("*.jpg"))) == 3
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (2 * 3 * 8, 2 * 2 * 8)  # 3 columns, 2 rows, upscaled x2

    ckpt = tmp_path / "gen.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = UniFashion.from_checkpoint(ckpt, device="cpu").module
    for k, v in model.generator.state_dict().items():
        assert torch.equal(v, reloaded.generator.state_dict()[k]), k
    out = tmp_path / "generated"
    assert main(["generate", "--ckpt", str(ckpt), "--data", str(root), "--out", str(out), "--steps", "2",
                 "--limit", "2"]) == 0
    files = sorted((out / "unpaired").glob("*.jpg"))
    assert [f.stem for f in files] == ["201", "202"]
    with Image.open(files[0]) as im:
        assert im.size == (8, 8)
    assert (out / "grid.png").is_file()


def test_save_grid_layout(tmp_path):
    top, bottom = torch.zeros(2, 3, 4, 5), torch.ones(2, 3, 4, 5)
    top[1, 0] = 1.0  # second condition image red
    arr = np.asarray(Image.open(save_grid(top, bottom, tmp_path / "g.png")))
    assert arr.shape == (16, 20, 3)
    assert (arr[:8, :10] == 0).all() and (arr[:8, 10:] == [255, 0, 0]).all() and (arr[8:] == 255).all()


def test_finetune_tryon_step(tmp_path):
    root = write_vitonhd(tmp_path / "viton")
    tok = tmp_path / "tok"
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, tok, vocab_size=200)
    L.seed_everything(0)
    gen = {**GEN, "variant": "tryon", "height": 16, "width": 12, "attention_from_block": 1}
    model = UniFashionModule(encoder_config(tok), generator=gen, phase="finetune_tryon",
                             optimizer=OptimizerConfig(lr=1e-2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = VitonHDDataModule(str(root), batch_size=2, height=16, width=12, encoder_image_size=16,
                           max_val_items=None)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.logged_metrics["train/loss_denoise_step"])
    moved = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    # paper: the Q-Former (and the widened UNet input, the image adapter) learn; the UNet body does not
    assert any(k.startswith("encoder.model.qformer.") for k in moved)
    assert "generator.unet.conv_in.weight" in moved and "generator.image_adapter.weight" in moved
    assert not any(k.startswith("generator.unet.") and not k.startswith("generator.unet.conv_in") for k in moved)
    assert not any(k.startswith("encoder.model.vision_model.") for k in moved)


def _fit_latent(dirs, tmp_path, cache: int) -> UniFashionModule:
    """Six latent-diffusion steps (tiny VAE) of the generation phase, with or without the frozen-part caches."""
    root, tok = dirs
    L.seed_everything(0)
    retrieval = UniFashionModule(encoder_config(tok))
    tmp_path.mkdir(parents=True)
    init = tmp_path / "retrieval.ckpt"
    torch.save({"state_dict": retrieval.state_dict()}, init)
    gen = {**GEN, "pixel_space": False, "height": 16, "width": 16, "vae_block_out_channels": (8, 16),
           "norm_num_groups": 8, "posterior_cache_size": cache}
    L.seed_everything(0)
    model = UniFashionModule(encoder_config(tok), generator=gen, phase="phase1_image_generation",
                             init_from=str(init), optimizer=OptimizerConfig(lr=1e-3), query_cache_size=cache)
    dm = FashionGenDataModule(root=str(root / "fashiongen"), batch_size=4, image_size=16)
    trainer = L.Trainer(max_steps=6, max_epochs=100, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(model, dm)
    return model


def test_generation_fit_with_query_and_posterior_caches_equals_fit_without(dirs, tmp_path):
    plain = _fit_latent(dirs, tmp_path / "plain", cache=0)
    cached = _fit_latent(dirs, tmp_path / "cached", cache=100)
    # the fixture's training rows come round again within six steps of 4: both caches were read
    assert cached.generator.posterior_cache.hits > 0 and cached.query_cache.hits > 0
    assert len(cached.generator.posterior_cache) == cached.generator.posterior_cache.misses
    trained = {k: v for k, v in plain.generator.state_dict().items() if k.startswith(("unet.", "image_adapter"))}
    for k, v in trained.items():
        torch.testing.assert_close(cached.generator.state_dict()[k], v, msg=lambda m, k=k: f"{k}: {m}")
