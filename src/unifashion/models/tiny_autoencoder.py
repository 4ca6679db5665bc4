"""A tiny diffusers `AutoencoderKL` trained on the synthetic images: the demo's stand-in for SD's VAE.

Latent diffusion needs an autoencoder whose latents decode back to the image; Stable Diffusion
ships one (trained by its authors, frozen in UniFashion). A randomly initialised tiny VAE decodes
every latent to noise, so `unifashion data synth` also trains a tiny `AutoencoderKL` on the
synthetic FashionGen training images at the tiny generator's resolution and saves it with
`save_pretrained`; the tiny generation config then loads it with `generator.vae: <dir>` through
`AutoencoderKL.from_pretrained`, the code path SD-1.4's VAE takes.

Objective (the KL-regularised autoencoder of Rombach et al. 2022, without its LPIPS / patch-GAN
terms): mean absolute (+ `mse_weight` x squared, + `chroma_weight` x the chroma's absolute) reconstruction error of a *sampled* latent plus `kl_weight` times the
KL divergence to N(0, I) (summed over latent elements, divided by the number of pixel values, as
the LDM code's sum-over-pixels / sum-over-latents weighting). After training the latent scaling
factor is set, as SD's 0.18215 was, to 1 / std of the latents of the training images, so that the
scaled latents the UNet diffuses have unit variance; it is stored in the saved config
(`scaling_factor`), which `Generator.encode_images` / `decode_latents` read.

Deterministic for given images, seed and thread count.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from unifashion.data.transforms import fit_image

REPORT_FILE = "pretraining.json"
IMAGE_KEY = "input_image"
TINY_VAE_DIR = "pretrained/vae"
"""Where `unifashion data synth` writes the tiny VAE, relative to the synthetic root."""
FASHIONGEN_TRAIN = "fashiongen/fashiongen_256_256_train.h5"
"""The synthetic training images the tiny VAE learns, relative to the synthetic root."""


@dataclass
class TinyAutoencoderConfig:
    """Architecture and training schedule of the tiny VAE."""

    height: int = 64
    """Training image height in pixels (the tiny generator's `height`)."""
    width: int = 64
    """Training image width in pixels (the tiny generator's `width`)."""
    block_out_channels: tuple[int, ...] = (16, 32, 32)
    """Encoder/decoder block widths; downsampling factor 2 ** (len - 1) (here 4: 64 px -> 16 latents).
    Narrow blocks buy optimiser steps: hue is what a tiny VAE learns last, and steps, not width, decide
    it (measured on the small benchmark, 2-core CPU, colour accuracy of 400 validation reconstructions
    vs 73.0 % on the originals: (32, 64, 64) x 300 steps of 32 -> 22.0 % in 68 s, x 600 -> 43.0 % in
    143 s; (16, 32, 32) x 1000 steps of 16 -> 38.0 % in 53 s, x 1600 -> 45.8 % in 80 s)."""
    layers_per_block: int = 1
    """ResNet layers per encoder block (the decoder has one more, as in diffusers)."""
    latent_channels: int = 4
    """Latent channels (SD: 4)."""
    norm_num_groups: int = 8
    """Group-norm groups (must divide every block width)."""
    kl_weight: float = 1e-6
    """Weight of the KL term relative to the per-pixel reconstruction error (LDM: 1e-6)."""
    mse_weight: float = 1.0
    """Weight of a squared-error term added to the absolute error (large colour errors get larger
    gradients: the hues are learnt in fewer steps)."""
    chroma_weight: float = 4.0
    """Weight of an extra absolute error on the chroma (each pixel's error minus its mean over the RGB
    channels). Hue is a small part of the plain pixel error, and a tiny VAE trained for a minute learns
    brightness and edges first: without this term (measured, 300-500 steps) the reconstructions are
    hue-less browns, and the generator's colour checks could not pass whatever the UNet learns."""
    init_logvar: float = -6.0
    """Initial log-variance of the posterior (the bias of `quant_conv`'s log-variance outputs, whose
    weights start at zero). Started at diffusers' ~0, the sampled latents are mostly noise at first and
    the decoder learns only the mean image and the brightness for hundreds of steps (measured: brown,
    hue-less reconstructions after 500 steps)."""
    crop: int | None = 32
    """Train on random `crop` x `crop` crops (the VAE is convolutional, as SD's VAE was trained on 256-px
    crops and used at 512 px): 4x cheaper steps than 64-px images. None: whole images."""
    steps: int = 2000
    """Optimiser steps. Hue is learnt last and its arrival at 1600 steps hangs on the run's numerics: the
    same seed trained with one or two CPU threads reconstructed the colour of 83.7 % or 95.9 % of the 123
    solid validation products; 2000 steps gave 95.1 % for both seeds tried (one thread, ~195 s; the demo
    trains it beside the retrieval stage)."""
    batch_size: int = 16
    """Images per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 20
    """Linear warm-up steps (then cosine to 5 % of `lr`)."""
    max_images: int | None = 3000
    """Training images read (a seeded subset of the file's rows; None: all)."""
    holdout: int = 64
    """Images kept out of training for the reported reconstruction error."""
    seed: int = 0
    """Seed of the initialisation, the subset and the batches."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        f = 2 ** (len(self.block_out_channels) - 1)
        if self.height % f or self.width % f:
            raise ValueError(f"height x width {self.height}x{self.width} must be multiples of the downsampling "
                             f"factor {f} of block_out_channels {self.block_out_channels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every block width "
                             f"{self.block_out_channels}")
        if self.crop is not None and (self.crop % f or self.crop > min(self.height, self.width)):
            raise ValueError(f"crop {self.crop} must be a multiple of {f} and fit in {self.height}x{self.width}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")


def build_tiny_autoencoder(config: TinyAutoencoderConfig) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL of `config`'s architecture (seed it beforehand)."""
    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=max(config.height, config.width),
    )


def read_hdf5_images(path: str | Path, size: tuple[int, int], max_images: int | None = None,
                     seed: int = 0) -> torch.Tensor:
    """FashionGen-layout HDF5 images (``input_image`` uint8 (N, H0, W0, 3)) resized to `size` = (H, W).

    The resize is the generator target's (`data.transforms.fit_image`, aspect ratio kept).

    Args:
        path: the HDF5 file (e.g. ``fashiongen_256_256_train.h5``).
        size: output (height, width).
        max_images: read a seeded random subset of this many rows (None: all).
        seed: seed of the subset.

    Returns:
        uint8 (N, 3, H, W).

    Raises:
        FileNotFoundError / KeyError: the file or its ``input_image`` key is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file {path} to train the tiny autoencoder on")
    with h5py.File(path, "r") as f:
        if IMAGE_KEY not in f:
            raise KeyError(f"{path} has no {IMAGE_KEY!r} dataset")
        data = f[IMAGE_KEY]
        n = data.shape[0]
        rows = np.arange(n)
        if max_images is not None and max_images < n:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))
        out = np.empty((len(rows), size[0], size[1], 3), dtype=np.uint8)
        for k, r in enumerate(rows):
            out[k] = np.asarray(fit_image(Image.fromarray(data[int(r)]), size))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (B, 3, H, W) -> float [-1, 1]."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x * 2 - 1


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per item, summed over latent elements: (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


@torch.no_grad()
def latent_std(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> float:
    """Standard deviation of the sampled (unscaled) latents of `images` (seed the RNG beforehand)."""
    parts = [vae.encode(_to_unit_range(images[i: i + batch_size])).latent_dist.sample()
             for i in range(0, len(images), batch_size)]
    return float(torch.cat(parts).std())


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the mode-latent reconstructions of `images`."""
    psnrs = []
    for i in range(0, len(images), batch_size):
        x = _to_unit_range(images[i: i + batch_size])  # (b, 3, H, W)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)  # (b,) in [0, 1] units
        psnrs.append(-10 * torch.log10(mse))
    return float(torch.cat(psnrs).mean())


def train_tiny_autoencoder(images: torch.Tensor, config: TinyAutoencoderConfig | None = None
                           ) -> tuple[AutoencoderKL, dict]:
    """Train a tiny AutoencoderKL on `images` and set its latent scaling factor.

    Args:
        images: uint8 (N, 3, H, W) or float in [0, 1], at `config.height` x `config.width`.
        config: architecture and schedule.

    Returns:
        (the trained VAE in eval mode, a report: schedule, losses, hold-out PSNR before/after, the
        latent std and scaling factor, seconds).
    """
    cfg = config or TinyAutoencoderConfig()
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (cfg.height, cfg.width):
        raise ValueError(f"images must be (N, 3, {cfg.height}, {cfg.width}), got {tuple(images.shape)}")
    n_hold = min(cfg.holdout, len(images) // 5)
    train, hold = images[n_hold:], images[:n_hold]
    if len(train) == 0:
        raise ValueError("no images to train the tiny autoencoder on")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vae = build_tiny_autoencoder(cfg)
        with torch.no_grad():  # quant_conv outputs [mean (C), logvar (C)]: a narrow posterior to start
            c = cfg.latent_channels
            vae.quant_conv.weight[c:].zero_()
            vae.quant_conv.bias[c:].fill_(cfg.init_logvar)
        psnr_before = reconstruction_psnr(vae.eval(), hold) if n_hold else float("nan")
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)

        def factor(step: int) -> float:  # linear warm-up, cosine to 5 %
            warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        g = torch.Generator().manual_seed(cfg.seed)
        rec_losses, kl_terms = [], []
        vae.train()
        for _ in range(cfg.steps):
            idx = torch.randint(0, len(train), (min(cfg.batch_size, len(train)),), generator=g)
            x = _to_unit_range(train[idx])  # (B, 3, H, W) in [-1, 1]
            if cfg.crop is not None:
                top = int(torch.randint(0, cfg.height - cfg.crop + 1, (), generator=g))
                left = int(torch.randint(0, cfg.width - cfg.crop + 1, (), generator=g))
                x = x[:, :, top: top + cfg.crop, left: left + cfg.crop]  # (B, 3, c, c)
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dist = vae.encode(x).latent_dist
            rec = vae.decode(dist.sample()).sample  # (B, 3, H, W)
            err = rec - x  # (B, 3, h, w)
            chroma = err - err.mean(1, keepdim=True)  # (B, 3, h, w)
            rec_loss = err.abs().mean() + cfg.mse_weight * err.pow(2).mean() + cfg.chroma_weight * chroma.abs().mean()
            kl = kl_to_standard_normal(dist.mean, dist.logvar).mean() / x[0].numel()
            loss = rec_loss + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            rec_losses.append(float(rec_loss.detach()))
            kl_terms.append(float(kl.detach()))
        vae.eval()
        std = latent_std(vae, train[: 512])
        vae.register_to_config(scaling_factor=1.0 / std)
        psnr_after = reconstruction_psnr(vae, hold) if n_hold else float("nan")
    report = {
        **asdict(cfg),
        "images": len(train),
        "holdout_images": n_hold,
        "first_rec_loss": rec_losses[0],
        "last_rec_loss": float(np.mean(rec_losses[-10:])),
        "last_kl_per_value": float(np.mean(kl_terms[-10:])),
        "holdout_psnr_untrained_db": round(psnr_before, 2),
        "holdout_psnr_db": round(psnr_after, 2),
        "latent_std": std,
        "scaling_factor": 1.0 / std,
        "downsampling_factor": 2 ** (len(cfg.block_out_channels) - 1),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return vae, report


def pretrain_tiny_autoencoder(images_h5: str | Path, out_dir: str | Path,
                              config: TinyAutoencoderConfig | None = None) -> dict:
    """Train the tiny VAE on an HDF5 file's images and save it with `save_pretrained`.

    Args:
        images_h5: FashionGen-layout training file (synthetic: ``<root>/fashiongen/fashiongen_256_256_train.h5``).
        out_dir: written with ``save_pretrained`` (``config.json`` with the scaling factor,
            ``diffusion_pytorch_model.safetensors``) plus ``pretraining.json`` (the report).
        config: architecture and schedule.

    Returns:
        The report written to ``pretraining.json`` (also: ``read_seconds``, the image loading time).
    """
    cfg = config or TinyAutoencoderConfig()
    start = time.perf_counter()
    images = read_hdf5_images(images_h5, (cfg.height, cfg.width), cfg.max_images, cfg.seed)  # (N, 3, H, W)
    read_seconds = round(time.perf_counter() - start, 2)
    vae, report = train_tiny_autoencoder(images, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(out)
    report = {**report, "source": str(images_h5), "read_seconds": read_seconds}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report


def write_tiny_vae(root: str | Path, steps: int | None = None) -> dict:
    """Pretrains the tiny VAE on the synthetic FashionGen training images into ``root/pretrained/vae``.

    Args:
        root: the synthetic root (with ``fashiongen/``).
        steps: optimiser steps (None: `TinyAutoencoderConfig.steps`).
    """
    root = Path(root)
    cfg = TinyAutoencoderConfig() if steps is None else TinyAutoencoderConfig(steps=steps)
    return pretrain_tiny_autoencoder(root / FASHIONGEN_TRAIN, root / TINY_VAE_DIR, cfg)
