"""The tiny VAE of the latent demo path (models/tiny_autoencoder.py), the generator-resolution diffusion
target (data.transforms.fit_image, FashionGen ``generation_image``) and `UniFashionModule.generation_targets`."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.data.synthetic.attributes import SUBCATEGORIES, sample_garment
from unifashion.data.synthetic.render import render_garment
from unifashion.data.transforms import denormalize, fit_image, pil_to_tensor
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.models.tiny_autoencoder import (
    REPORT_FILE,
    TinyAutoencoderConfig,
    build_tiny_autoencoder,
    kl_to_standard_normal,
    pretrain_tiny_autoencoder,
    read_hdf5_images,
    reconstruction_psnr,
    train_tiny_autoencoder,
)

TINY = dict(height=16, width=16, block_out_channels=(8, 16), norm_num_groups=8, batch_size=8, lr=3e-3,
            warmup_steps=5, holdout=8, max_images=None, crop=8)


def _rendered(n: int, size: int = 16) -> np.ndarray:
    """n synthetic product shots (uint8 (n, size, size, 3)), seeded."""
    rng = np.random.default_rng(0)
    shots = [render_garment(sample_garment(rng, i, SUBCATEGORIES[i % len(SUBCATEGORIES)]), (64, 64))
             for i in range(n)]
    return np.stack([np.asarray(s.resize((size, size), Image.Resampling.BICUBIC)) for s in shots])


def _write_h5(path, images: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("input_image", data=images)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)  # (3,)
    assert torch.allclose(kl_to_standard_normal(mean, logvar), ref, atol=1e-5)


def test_fit_image_keeps_the_aspect_ratio():
    img = Image.new("RGB", (40, 20), (200, 200, 200))  # W x H = 40 x 20, grey
    img.paste((255, 0, 0), (4, 4, 16, 16))  # a red square off the border
    same = fit_image(img, (10, 20))  # same aspect: a plain resize
    assert np.array_equal(np.asarray(same), np.asarray(img.resize((20, 10), Image.Resampling.BICUBIC)))
    padded = np.asarray(fit_image(img, (20, 20), mode="pad")).astype(int)  # 20 x 10 image, padded above/below
    assert padded.shape == (20, 20, 3)
    assert (padded[:5] == 200).all() and (padded[-5:] == 200).all()  # fill = border median (grey)
    assert (np.abs(padded[9:11, 4:6] - (255, 0, 0)) < 30).all()  # the square at half size, shifted down by 5
    cropped = np.asarray(fit_image(img, (20, 20), mode="crop"))  # the centre 20 x 20 of the 40 x 20 image
    assert np.array_equal(cropped, np.asarray(img.crop((10, 0, 30, 20))))
    with pytest.raises(ValueError, match="mode"):
        fit_image(img, (8, 8), mode="stretch")


def test_read_hdf5_images_resizes_like_the_generation_target(tmp_path):
    imgs = _rendered(6, size=32)
    _write_h5(tmp_path / "train.h5", imgs)
    out = read_hdf5_images(tmp_path / "train.h5", (16, 16))
    assert out.dtype == torch.uint8 and out.shape == (6, 3, 16, 16)
    ref = np.asarray(fit_image(Image.fromarray(imgs[4]), (16, 16)))
    assert np.array_equal(out[4].permute(1, 2, 0).numpy(), ref)
    sub = read_hdf5_images(tmp_path / "train.h5", (16, 16), max_images=3, seed=1)
    assert sub.shape[0] == 3
    with pytest.raises(FileNotFoundError):
        read_hdf5_images(tmp_path / "missing.h5", (16, 16))


def test_trained_vae_reconstructs_and_loads_through_the_generator(tmp_path):
    torch.manual_seed(0)
    imgs = _rendered(48)
    _write_h5(tmp_path / "train.h5", imgs)
    cfg = TinyAutoencoderConfig(**TINY, steps=150)
    report = pretrain_tiny_autoencoder(tmp_path / "train.h5", tmp_path / "vae", cfg)
    assert json.loads((tmp_path / "vae" / REPORT_FILE).read_text())["steps"] == 150
    # training helps: hold-out reconstructions far better than the untrained VAE's
    assert report["holdout_psnr_db"] > report["holdout_psnr_untrained_db"] + 5
    assert report["last_rec_loss"] < report["first_rec_loss"] / 2
    # the generator loads it through from_pretrained, like SD's VAE
    gen = Generator(GeneratorConfig(vae=str(tmp_path / "vae"), num_queries=2, height=16, width=16,
                                    sample_size=8, block_out_channels=(16, 32), norm_num_groups=8,
                                    cross_attention_dim=16), query_dim=8).eval()
    assert gen.vae_scale_factor == 2 and gen.latent_channels == 4
    x = pil_to_tensor(Image.fromarray(imgs[0]))[None] * 2 - 1  # (1, 3, 16, 16)
    sf = gen.vae.config.scaling_factor
    assert sf == pytest.approx(report["scaling_factor"])
    mode = gen.vae.encode(x).latent_dist.mode()
    assert torch.allclose(gen.encode_images(x, sample=False), mode * sf, atol=1e-6)
    # the scaling factor whitens the latents of the training images (what SD's 0.18215 does)
    with torch.no_grad():
        lat = torch.cat([gen.encode_images(pil_to_tensor(Image.fromarray(i))[None] * 2 - 1) for i in imgs[8:]])
    assert 0.7 < float(lat.std()) < 1.4
    rec = gen.decode_latents(gen.encode_images(x, sample=False))  # (1, 3, 16, 16) in [0, 1]
    assert float(((rec - (x + 1) / 2) ** 2).mean()) < float((((x + 1) / 2 - 0.5) ** 2).mean())


def test_train_is_deterministic_and_checks_shapes():
    imgs = torch.from_numpy(_rendered(20)).permute(0, 3, 1, 2)
    cfg = TinyAutoencoderConfig(**{**TINY, "holdout": 4}, steps=2)
    a, ra = train_tiny_autoencoder(imgs, cfg)
    b, rb = train_tiny_autoencoder(imgs, cfg)
    assert ra["last_rec_loss"] == rb["last_rec_loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert reconstruction_psnr(a, imgs[:4]) == pytest.approx(ra["holdout_psnr_db"], abs=0.01)
    with pytest.raises(ValueError, match="16, 16"):
        train_tiny_autoencoder(imgs[:, :, :8, :8], cfg)
    with pytest.raises(ValueError, match="multiples"):
        TinyAutoencoderConfig(height=18, width=16, block_out_channels=(8, 16, 16), norm_num_groups=8)
    assert build_tiny_autoencoder(cfg).config.latent_channels == 4


def _fashiongen(root, size: int = 32):
    """A two-split FashionGen file of asymmetric rendered garments (left half tinted)."""
    from fixtures_data import write_fashiongen

    write_fashiongen(root, size=size)
    for split in ("train", "validation"):
        with h5py.File(root / f"fashiongen_256_256_{split}.h5", "r+") as f:
            n = f["input_image"].shape[0]
            imgs = _rendered(n, size)
            imgs[:, :, : size // 3] = (255, 0, 0)  # left third red: a flip is visible
            f["input_image"][...] = imgs
    return root


def test_fashiongen_items_carry_the_generation_target(tmp_path):
    root = _fashiongen(tmp_path / "fg")
    dm = FashionGenDataModule(root=str(root), image_size=16, generation_size=(24, 24), batch_size=2)
    dm.setup("fit")
    item = dm.pairs_dataset("validation")[1]
    assert item["generation_image"].shape == (3, 24, 24) and item["image"].shape == (3, 16, 16)
    with h5py.File(root / "fashiongen_256_256_validation.h5") as f:
        original = f["input_image"][1]
    ref = pil_to_tensor(fit_image(Image.fromarray(original), (24, 24))) * 2 - 1
    assert torch.allclose(item["generation_image"], ref)
    batch = next(iter(dm.train_dataloader()))
    assert batch["generation_image"].shape == (2, 3, 24, 24)
    plain = FashionGenDataModule(root=str(root), image_size=16)  # no generation_size: no target
    plain.setup("validate")
    assert "generation_image" not in plain.pairs_dataset("validation")[0]
    with pytest.raises(ValueError, match="generation_size"):
        FashionGenDataModule(root=str(root), generation_size=(0, 8))


def test_augmented_items_flip_both_views_alike(tmp_path):
    root = _fashiongen(tmp_path / "fg", size=16)
    dm = FashionGenDataModule(root=str(root), image_size=16, generation_size=(16, 16), augment=True)
    dm.setup("fit")
    ds = dm.pairs_dataset("train")
    torch.manual_seed(0)
    flips = []
    for i in range(len(ds)):
        item = ds[i]
        view = denormalize(item["image"])  # (3, 16, 16) in [0, 1]
        target = (item["generation_image"] + 1) / 2
        assert torch.allclose(view, target, atol=2 / 255), i  # same size: same pixels, flipped alike
        flips.append(bool(target[1, 8, 0] > 0.5))  # not red (G = 0) at the left edge: flipped
    assert any(flips) and not all(flips)


def test_generation_targets_come_from_the_batch(tmp_path):
    from tiny import tiny_encoder_config

    from unifashion.models.tokenizers import train_wordpiece_tokenizer
    from unifashion.module import UniFashionModule

    tok = tmp_path / "tok"
    train_wordpiece_tokenizer(["red shirt blue dress"] * 5, tok, vocab_size=100)
    gen = dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8, block_out_channels=(16, 32),
               cross_attention_dim=16, norm_num_groups=8)
    model = UniFashionModule(tiny_encoder_config(tok), generator=gen, phase="phase1_image_generation")
    s = model.encoder.config.image_size
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    batch = {"image": torch.randn(2, 3, s, s), "generation_image": target}
    assert torch.equal(model.generation_targets(batch), target)
    with pytest.raises(ValueError, match="generation_size"):
        model.generation_targets({"image": batch["image"], "generation_image": torch.zeros(2, 3, 6, 6)})
    # no generation_image (e.g. Fashion200K): the encoder view, denormalised and resized
    fallback = model.generation_targets({"image": batch["image"]})
    assert fallback.shape == (2, 3, 8, 8) and fallback.min() >= -1 and fallback.max() <= 1
