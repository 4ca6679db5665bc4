"""Image generation branch: image task-specific adapter + latent-diffusion UNet + frozen VAE + scheduler.

The Q-Former query outputs Z (B, Q, H_q) of the multimodal encoder are mapped by a linear image
task-specific adapter (TSA) to the UNet's cross-attention width and used as the cross-attention
condition of a Stable-Diffusion UNet (UniFashion eq. 7 / eq. 12). Three variants share this one class
and differ only in which spatial conditions are concatenated to the noisy latent at the UNet input:

| variant | UNet input channels (in this order)                                               | total |
|---------|-----------------------------------------------------------------------------------|-------|
| plain   | noisy latent (4)                                                                  | 4     |
| tryon   | noisy latent (4), inpaint mask (1), masked-person latent (4)                      | 9     |
| design  | noisy latent (4), inpaint mask (1), masked-person latent (4), pose (18), sketch (1) | 28  |

The order is the one of SD-inpainting and MGD. A UNet loaded with fewer input channels is widened
with ZERO-initialised weights for the new channels, so the widened model reproduces the pretrained
output whatever the new inputs are.

Checkpoints with another input order: Paint-by-Example (and StableVITON, which starts from it) feed
``[noisy latent (4), masked-image latent (4), mask (1)]`` (diffusers' PaintByExamplePipeline concatenates
``latents, masked_image_latents, mask``), i.e. the masked latent BEFORE the mask, and StableVITON adds a
DensePose latent (4) after them. Give the checkpoint's order in `GeneratorConfig.unet_input_layout`
(e.g. ``("latent", "masked_latent", "mask")`` for Paint-by-Example, ``("latent", "masked_latent", "mask",
"densepose:4")`` for a 13-channel StableVITON UNet); `remap_conv_in` then moves each channel group's
weights to its slot in the order above (zeros for the groups the checkpoint lacks, e.g. pose and sketch;
the weights of groups this generator does not feed, e.g. DensePose, are dropped). Without a layout the
checkpoint's channels are taken as a prefix of the order above (SD, SD-inpainting, a saved generator).

Trainable UNet-encoder copy (`GeneratorConfig.controlnet_copy=True`, paper Figure 3 / StableVITON,
`models/control_copy.py`): a copy of the UNet encoder reads the garment latent (try-on; conditions key
"cloth") or the sketch drawn as black strokes on white (design), and every UNet up block attends to it
through a zero-initialised cross-attention; at initialisation the output is the plain UNet's exactly.

Pixel space (`GeneratorConfig.pixel_space=True`, tiny CPU demos and tests only): there is no VAE; the
UNet denoises the RGB pixels in [-1, 1] directly (a DDPM-style pixel diffusion, "latents" are the
pixels, 3 channels, downsampling factor 1, linear beta schedule of Ho et al. 2020). Why: a tiny VAE
built from a config is random and frozen, so its latents decode to noise whatever the UNet learns and
generated images cannot show the requested garment; training a VAE would be a hidden extra phase. The
paper configuration keeps the Stable Diffusion VAE (`pixel_space=False`). In pixel space the try-on
"masked-person latent" is the masked person image itself (3 channels), so the try-on input has
3 + 1 + 3 = 7 channels and the design input 26.

Spatial conditions (dict keys of `conditions`):
    agnostic      float (B, 3, H, W) in [-1, 1], the dataset's agnostic person (try-on region already
                  greyed out, VITON-HD ``agnostic-v3.2``), used as the masked person as it is.
    person        float (B, 3, H, W) in [-1, 1], the person image, used when there is no "agnostic": its
                  inpaint region is set to 0 (mid grey); defaults to the target `images` in `denoise_loss`.
    cloth         float (B, 3, H, W) in [-1, 1], the in-shop garment (control-copy input of try-on).
    inpaint_mask  float (B, 1, H, W), 1 where the garment is to be generated, 0 elsewhere.
    pose_map      float (B, 18, H, W), COCO-18 keypoint heatmaps (design only).
    sketch        float (B, 1, H, W), the garment sketch (design only).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unifashion.losses.denoising import PREDICTION_TYPES, denoising_loss
from unifashion.models.control_copy import ControlCopy
from unifashion.models.frozen_cache import FrozenOutputCache

log = logging.getLogger(__name__)

VARIANT_EXTRA_CHANNELS = {"plain": 0, "tryon": 1 + 4, "design": 1 + 4 + 18 + 1}
"""Channels concatenated to a 4-channel SD latent per variant (mask, masked-person latent, pose, sketch)."""
NUM_POSE_MAPS = 18
PIXEL_CHANNELS = 3


def variant_extra_channels(variant: str, latent_channels: int) -> int:
    """Extra UNet input channels of `variant` when the (masked-person) latent has `latent_channels`."""
    if variant not in VARIANT_EXTRA_CHANNELS:
        raise ValueError(f"variant must be one of {tuple(VARIANT_EXTRA_CHANNELS)}, got {variant!r}")
    return {"plain": 0, "tryon": 1 + latent_channels, "design": 1 + latent_channels + NUM_POSE_MAPS + 1}[variant]

SAMPLERS = ("pndm", "dpmsolver++", "ddim")
_CONFIG_FILE = "generator_config.json"
_WEIGHTS_FILE = "generator_adapter.safetensors"


@dataclass
class GeneratorConfig:
    """Configuration of the image generation branch."""

    pretrained: str | None = None
    """A diffusers directory or hub id with `unet/`, `vae/` and `scheduler/` subfolders (paper: Stable
    Diffusion v1.4). None builds a randomly initialised model from the tiny fields below."""
    unet: str | None = None
    """Optional separate UNet (e.g. Paint-by-Example): a directory with the UNet's `config.json` or a
    diffusers directory with a `unet/` subfolder. Overrides the UNet of `pretrained`."""
    vae: str | None = None
    """Optional separately fine-tuned VAE (e.g. on VITON-HD), same rules as `unet`."""
    variant: Literal["plain", "tryon", "design"] = "plain"
    """plain: queries -> image; tryon: + masked person + inpaint mask (9 ch); design: + pose + sketch (28 ch)."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the UNet predicts; overrides the prediction type of the loaded scheduler."""
    cond_dropout: float = 0.1
    """Probability of replacing an item's condition by the learned null condition during training
    (classifier-free guidance)."""
    num_queries: int = 32
    """Number of Q-Former queries Q (length of the learned null condition)."""
    pixel_space: bool = False
    """Tiny CPU demos/tests: no VAE, the UNet denoises RGB pixels directly (module docstring). The paper
    configuration keeps False (latent diffusion with the SD VAE)."""
    controlnet_copy: bool = False
    """Trainable copy of the UNet encoder joined to its decoder by zero cross-attention (paper Figure 3,
    `models/control_copy.py`); try-on and design variants only. Parameter group "unet_control"."""
    control_input: Literal["cloth", "sketch"] | None = None
    """What the encoder copy reads: the garment ("cloth", conditions key "cloth") or the sketch drawn as black
    strokes on white ("sketch"). None: "cloth" for try-on, "sketch" for design."""
    unet_input_layout: tuple[str, ...] | None = None
    """Input-channel groups of the LOADED UNet's conv_in, in the checkpoint's order, from "latent", "mask",
    "masked_latent", "pose", "sketch", plus "<name>:<channels>" for groups this generator does not feed
    (dropped). Paint-by-Example: ("latent", "masked_latent", "mask"). None: the checkpoint's channels are a
    prefix of this generator's order (module docstring)."""
    zero_terminal_snr: bool = False
    """Rescale the training scheduler's betas to zero terminal SNR and sample with "trailing" timesteps
    (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers
    `rescale_betas_zero_snr`). SD's scaled-linear schedule leaves sqrt(alpha_bar_T) = 0.068 of the image in
    the noisiest training input, so the UNet learns to read the mean colour from its input and, from pure
    noise at inference, drifts to medium, desaturated colours whatever the condition. Needs v-prediction.
    SD-1.4 was trained without it (the paper-size configs keep False)."""
    noise_offset: float = 0.0
    """Offset noise (Guttenberg 2023; diffusers `train_text_to_image.py --noise_offset`, typically 0.05-0.1):
    training noise eps + noise_offset * n, n ~ N(0, 1) of shape (B, C, 1, 1), one constant per latent channel.
    The spatial mean of plain noise over h*w positions has std 1/sqrt(h*w), so a channel's mean (the image's
    overall colour and brightness) is the last thing noise destroys: the UNet learns to read it from its input
    rather than set it from the condition, and from pure noise samples drift to medium, washed-out colours.
    The offset noises that mean as much as the rest. 0: off (SD-1.4 as trained)."""
    snr_gamma: float | None = None
    """Min-SNR-gamma weighting of the denoising loss (Hang et al. 2023; `losses.denoising.min_snr_weights`;
    5 in the paper and diffusers' `--snr_gamma`). None: the plain mean (SD-1.4 as trained)."""
    pooled_condition: bool = False
    """Also feed the condition's mean over its queries (B, D) into the UNet's timestep embedding
    (diffusers `class_embed_type="projection"`), the global path Imagen and SD-XL give their pooled text
    embedding, besides the cross-attention. For a UNet built from config (a loaded UNet must have been
    saved with it). A from-scratch UNet learns a global attribute such as the colour through it in far
    fewer steps than through cross-attention alone (measured on the demo, bench/RESULTS.md); SD-1.4
    has no such path, so the paper-size configs keep False."""
    gradient_checkpointing: bool = False
    """Enable gradient checkpointing in the UNet."""
    posterior_cache_size: int = 0
    """Keep the frozen VAE's posterior (mean and log-variance, (2C, h, w)) of up to this many training images,
    keyed by image content (`models.frozen_cache.FrozenOutputCache`), and draw each step's latent from it
    instead of re-encoding: the same distribution, without the encoder's forward pass after the first epoch.
    Host memory 2C*h*w*4 bytes an image (tiny demo: 8 KB; SD at 512x384: 98 KB). 0: off (encode every step)."""
    height: int = 512
    """Generated image height in pixels (paper: 512)."""
    width: int = 384
    """Generated image width in pixels (paper: 384)."""
    guidance_scale: float = 7.5
    """Default classifier-free guidance scale of `sample` (MGD: 7.5); <= 1 disables guidance."""
    # Tiny/from-config fields (used only when `pretrained`/`unet`/`vae` are None).
    sample_size: int = 8
    """UNet latent sample size (config only)."""
    block_out_channels: tuple[int, ...] = (32, 64)
    """UNet block widths; SD-1.4: (320, 640, 1280, 1280). All but the last block have cross-attention."""
    attention_from_block: int = 0
    """Index of the first UNet down block with (cross-)attention (config only; SD-1.4: 0). Earlier,
    high-resolution blocks are plain ResNet blocks: self-attention over every pixel of a pixel-space UNet
    is what makes CPU training slow. The mid block always has cross-attention."""
    layers_per_block: int = 1
    """UNet resnet layers per block (SD-1.4: 2)."""
    cross_attention_dim: int = 32
    """UNet cross-attention width (SD-1.4: 768); the adapter maps queries to it."""
    attention_head_dim: int = 8
    """UNet attention heads (diffusers' historical name; SD-1.4: 8)."""
    latent_channels: int = 4
    """VAE latent channels (SD: 4)."""
    vae_block_out_channels: tuple[int, ...] = (32, 64)
    """VAE block widths (SD: (128, 256, 512, 512)); downsampling factor 2 ** (len - 1)."""
    vae_layers_per_block: int = 1
    """VAE resnet layers per block (SD: 2)."""
    norm_num_groups: int = 32
    """Group-norm groups of UNet and VAE (SD: 32)."""
    num_train_timesteps: int = 1000
    """Diffusion steps of the training scheduler built from config (SD: 1000, scaled-linear betas)."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.vae_block_out_channels = tuple(self.vae_block_out_channels)
        if self.variant not in VARIANT_EXTRA_CHANNELS:
            raise ValueError(f"variant must be one of {tuple(VARIANT_EXTRA_CHANNELS)}, got {self.variant!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 or None, got {self.snr_gamma}")
        if self.posterior_cache_size < 0:
            raise ValueError(f"posterior_cache_size must be >= 0, got {self.posterior_cache_size}")
        if self.noise_offset < 0:
            raise ValueError(f"noise_offset must be >= 0, got {self.noise_offset}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.controlnet_copy and self.variant == "plain":
            raise ValueError("controlnet_copy=True needs variant 'tryon' or 'design' (the copy reads the garment "
                             "or the sketch); got variant 'plain'")
        if self.control_input not in (None, "cloth", "sketch"):
            raise ValueError(f"control_input must be 'cloth', 'sketch' or None, got {self.control_input!r}")
        if self.unet_input_layout is not None:
            self.unet_input_layout = tuple(self.unet_input_layout)
            parse_layout(self.unet_input_layout, latent_channels=4)  # validates the names
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if not 0 <= self.attention_from_block < len(self.block_out_channels):
            raise ValueError(f"attention_from_block must index block_out_channels {self.block_out_channels}, "
                             f"got {self.attention_from_block}")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ValueError("zero_terminal_snr=True needs prediction_type 'v_prediction' (at zero SNR the noise "
                             f"is the input itself and epsilon-prediction learns nothing); got {self.prediction_type!r}")
        if self.pixel_space and self.vae is not None:
            raise ValueError(f"pixel_space=True has no VAE, but vae={self.vae!r} was given")


def _zero_snr_fields(config: GeneratorConfig) -> dict:
    """Scheduler fields of `zero_terminal_snr` (none when it is off: the loaded schedule is kept)."""
    return {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"} if config.zero_terminal_snr else {}


def _resolve_component(path: str, subfolder: str, config_name: str = "config.json") -> tuple[str, str | None]:
    """Find a diffusers component either at `path/subfolder` or directly at `path`.

    Returns `(path, subfolder or None)`. Hub ids ("org/name") are passed through with the subfolder.

    Raises:
        FileNotFoundError: for a local-looking path that does not exist or holds no `config.json`.
    """
    p = Path(path).expanduser()
    looks_local = p.is_absolute() or path.startswith((".", "~")) or path.count("/") != 1 or p.exists()
    if not looks_local:
        return path, subfolder  # hub id; the library resolves it (offline: from its cache)
    if (p / subfolder / config_name).is_file():
        return str(p), subfolder
    if (p / config_name).is_file():
        return str(p), None
    raise FileNotFoundError(
        f"No diffusers {subfolder} at {p}: expected {p / subfolder / config_name} (a diffusers pipeline "
        f"directory) or {p / config_name} (a {subfolder} directory)."
    )


def _tiny_unet(config: GeneratorConfig, in_channels: int) -> UNet2DConditionModel:
    n = len(config.block_out_channels)
    attn = [config.attention_from_block <= i < n - 1 for i in range(n)]  # the last block never attends
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        **({"class_embed_type": "projection", "projection_class_embeddings_input_dim": config.cross_attention_dim}
           if config.pooled_condition else {}),
    )


def _tiny_vae(config: GeneratorConfig) -> AutoencoderKL:
    n = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_block_out_channels,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size * 2 ** (n - 1),
    )


def widen_conv_in(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """Widen the UNet's first convolution to `in_channels`, zero-initialising the new input channels.

    The old channels keep their weights, so for any values of the new inputs the widened UNet gives the
    same output as before (StableVITON / MGD practice). The UNet config's `in_channels` is updated so that
    `save_pretrained` / `from_pretrained` round-trip the widened model.

    Raises:
        ValueError: if `in_channels` is smaller than the current number of input channels.
    """
    old = unet.conv_in
    if in_channels == old.in_channels:
        return unet
    if in_channels < old.in_channels:
        raise ValueError(f"Cannot narrow the UNet input from {old.in_channels} to {in_channels} channels.")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def channel_groups(variant: str, latent_channels: int) -> list[tuple[str, int]]:
    """This generator's UNet input-channel groups, in order: [(name, channels), ...] (module docstring)."""
    groups = [("latent", latent_channels)]
    if variant in ("tryon", "design"):
        groups += [("mask", 1), ("masked_latent", latent_channels)]
    if variant == "design":
        groups += [("pose", NUM_POSE_MAPS), ("sketch", 1)]
    return groups


def parse_layout(layout: tuple[str, ...] | list[str], latent_channels: int) -> list[tuple[str, int]]:
    """A checkpoint's `unet_input_layout` -> [(name, channels), ...].

    Known names get their sizes ("latent" and "masked_latent": `latent_channels`, "mask" 1, "pose" 18,
    "sketch" 1); any other group is written "<name>:<channels>".

    Raises:
        ValueError: for an unknown name without a size, a bad size, or a repeated name.
    """
    sizes = dict(channel_groups("design", latent_channels))
    out: list[tuple[str, int]] = []
    for entry in layout:
        name, _, size = str(entry).partition(":")
        if size:
            if not size.isdigit() or int(size) < 1:
                raise ValueError(f"unet_input_layout entry {entry!r}: the size after ':' must be a positive integer")
            n = int(size)
            if name in sizes and n != sizes[name]:
                raise ValueError(f"unet_input_layout entry {entry!r}: {name!r} has {sizes[name]} channels here")
        elif name in sizes:
            n = sizes[name]
        else:
            raise ValueError(f"unet_input_layout entry {entry!r} is unknown: use one of {sorted(sizes)} or "
                             "'<name>:<channels>' for a group this generator does not feed")
        if any(name == o for o, _ in out):
            raise ValueError(f"unet_input_layout names {name!r} twice: {tuple(layout)}")
        out.append((name, n))
    return out


def remap_conv_in(unet: UNet2DConditionModel, source: list[tuple[str, int]],
                  target: list[tuple[str, int]]) -> UNet2DConditionModel:
    """Rebuild conv_in for the `target` channel groups from a checkpoint whose input has `source` groups.

    Each target group takes the checkpoint's weights of the group of the same name, wherever it sits in the
    checkpoint (Paint-by-Example's masked latent before its mask lands after our mask); a group the
    checkpoint lacks gets zero weights, so its input does not change the output; checkpoint groups absent
    from `target` are dropped (logged by the caller). The UNet config's `in_channels` is updated.

    Raises:
        ValueError: if the source groups do not add up to the checkpoint's input channels.
    """
    old = unet.conv_in
    if sum(n for _, n in source) != old.in_channels:
        raise ValueError(f"unet_input_layout {[f'{k}:{n}' for k, n in source]} adds up to "
                         f"{sum(n for _, n in source)} channels, but the UNet's conv_in has {old.in_channels}")
    starts, pos = {}, 0
    for name, n in source:
        starts[name] = pos
        pos += n
    in_channels = sum(n for _, n in target)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        pos = 0
        for name, n in target:
            if name in starts:
                new.weight[:, pos: pos + n] = old.weight[:, starts[name]: starts[name] + n]
            pos += n
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


class Generator(nn.Module):
    """Queries -> image: image TSA + UNet2DConditionModel + frozen AutoencoderKL + DDPM training scheduler.

    Args:
        config: the generator configuration, or a mapping of its fields (a config file's `model.generator`).
        query_dim: width H_q of the Q-Former query outputs.
    """

    def __init__(self, config: GeneratorConfig | Mapping[str, Any], query_dim: int) -> None:
        super().__init__()
        if isinstance(config, Mapping):
            config = GeneratorConfig(**config)
        self.config = config
        self.query_dim = query_dim
        latent_in = PIXEL_CHANNELS if config.pixel_space else config.latent_channels

        unet_src = config.unet or config.pretrained
        if unet_src is not None:
            path, sub = _resolve_component(unet_src, "unet")
            unet = UNet2DConditionModel.from_pretrained(path, subfolder=sub)
            if config.pixel_space and unet.config.out_channels != PIXEL_CHANNELS:
                raise ValueError(f"pixel_space=True needs a UNet with {PIXEL_CHANNELS} output channels; "
                                 f"{unet_src} has {unet.config.out_channels}")
            latent_in = unet.config.out_channels
        else:
            unet = _tiny_unet(config, latent_in)
        target = channel_groups(config.variant, latent_in)
        if config.unet_input_layout is not None:
            source = parse_layout(config.unet_input_layout, latent_in)
            dropped = [name for name, _ in source if name not in dict(target)]
            if dropped:
                log.warning("generator: the loaded UNet's input groups %s are not fed by variant %r; their "
                            "conv_in weights are dropped", dropped, config.variant)
            self.unet = remap_conv_in(unet, source, target)
        else:
            self.unet = widen_conv_in(unet, sum(n for _, n in target))
        if config.pooled_condition and (self.unet.config.class_embed_type != "projection"
                                        or self.unet.config.projection_class_embeddings_input_dim
                                        != self.unet.config.cross_attention_dim):
            raise ValueError(f"pooled_condition=True needs a UNet with class_embed_type 'projection' of the "
                             f"cross-attention width; the UNet of {unet_src!r} has class_embed_type "
                             f"{self.unet.config.class_embed_type!r}")
        if not config.pooled_condition and self.unet.config.class_embed_type == "projection":
            raise ValueError(f"the UNet of {unet_src!r} reads a pooled condition (class_embed_type 'projection'): "
                             "set generator.pooled_condition: true")
        # Figure 3's trainable encoder copy (reads the garment / sketch latent); None without it
        self.control = ControlCopy(self.unet, latent_in) if config.controlnet_copy else None

        self.vae: AutoencoderKL | None = None
        # the frozen VAE's posteriors by image content (`encode_images(cached=True)`); off at size 0
        self.posterior_cache = FrozenOutputCache(config.posterior_cache_size)
        if not config.pixel_space:
            vae_src = config.vae or config.pretrained
            if vae_src is not None:
                path, sub = _resolve_component(vae_src, "vae")
                self.vae = AutoencoderKL.from_pretrained(path, subfolder=sub)
            else:
                self.vae = _tiny_vae(config)
            self.vae.requires_grad_(False)
            self.vae.eval()
            if self.vae.config.latent_channels != latent_in:
                raise ValueError(
                    f"VAE latent channels {self.vae.config.latent_channels} != UNet output channels {latent_in}"
                )

        if config.pretrained is not None:
            path, sub = _resolve_component(config.pretrained, "scheduler", "scheduler_config.json")
            self.scheduler = DDPMScheduler.from_pretrained(path, subfolder=sub,
                                                           prediction_type=config.prediction_type,
                                                           **_zero_snr_fields(config))
        else:  # SD's scaled-linear betas for latents; DDPM's linear betas for pixels (Ho et al. 2020)
            self.scheduler = DDPMScheduler(
                num_train_timesteps=config.num_train_timesteps,
                beta_schedule="linear" if config.pixel_space else "scaled_linear",
                beta_start=1e-4 if config.pixel_space else 0.00085,
                beta_end=0.02 if config.pixel_space else 0.012,
                clip_sample=False,
                steps_offset=1,
                prediction_type=config.prediction_type,
                **_zero_snr_fields(config),
            )
        if self.scheduler.config.prediction_type != config.prediction_type:
            self.scheduler.register_to_config(prediction_type=config.prediction_type)

        cross_dim = self.unet.config.cross_attention_dim
        self.image_adapter = nn.Linear(query_dim, cross_dim)  # image TSA: (B, Q, H_q) -> (B, Q, D)
        nn.init.normal_(self.image_adapter.weight, std=query_dim**-0.5)
        nn.init.zeros_(self.image_adapter.bias)
        # learned null condition for classifier-free guidance, in the cross-attention space
        self.null_condition = nn.Parameter(torch.randn(config.num_queries, cross_dim) * 0.02)  # (Q, D)
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ helpers
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (SD: 8; pixel space: 1)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the diffused signal (SD latents: 4; pixel space: 3)."""
        return PIXEL_CHANNELS if self.vae is None else self.vae.config.latent_channels

    def train(self, mode: bool = True) -> Generator:
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()  # frozen: never in training mode
        return self

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for the freeze policy.

        Returns:
            "image_adapter": the TSA and the learned null condition; "unet_input": the UNet's first conv
            (the widened one); "unet": every other UNet parameter; "unet_control" (with `controlnet_copy`):
            the trainable encoder copy and its zero cross-attention blocks. The VAE is always frozen.
        """
        conv_in = {id(p) for p in self.unet.conv_in.parameters()}
        groups = {
            "image_adapter": [*self.image_adapter.parameters(), self.null_condition],
            "unet_input": list(self.unet.conv_in.parameters()),
            "unet": [p for p in self.unet.parameters() if id(p) not in conv_in],
        }
        if self.control is not None:
            groups["unet_control"] = list(self.control.parameters())
        return groups

    def encode_condition(self, query_output: Tensor) -> Tensor:
        """Image TSA: query outputs (B, Q, H_q) -> cross-attention condition (B, Q, D)."""
        if query_output.dim() != 3 or query_output.shape[-1] != self.query_dim:
            raise ValueError(f"query_output must be (B, Q, {self.query_dim}), got {tuple(query_output.shape)}")
        if query_output.shape[1] != self.config.num_queries:
            raise ValueError(
                f"query_output has {query_output.shape[1]} queries but the null condition was built for "
                f"num_queries={self.config.num_queries}"
            )
        return self.image_adapter(query_output.to(self.image_adapter.weight.dtype))  # (B, Q, D)

    def null_condition_batch(self, batch_size: int) -> Tensor:
        """The learned null condition repeated for a batch, (B, Q, D)."""
        return self.null_condition.unsqueeze(0).expand(batch_size, -1, -1)

    def apply_condition_dropout(
        self, cond: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Replace each item's condition by the null condition with probability `cond_dropout`.

        Returns:
            (condition (B, Q, D), dropped bool (B,)).
        """
        b = cond.shape[0]
        u = torch.rand(b, generator=generator, device="cpu" if generator is None else generator.device)
        dropped = (u < self.config.cond_dropout).to(cond.device)  # (B,)
        cond = torch.where(dropped[:, None, None], self.null_condition_batch(b).to(cond.dtype), cond)
        return cond, dropped

    @torch.no_grad()
    def encode_images(self, images: Tensor, sample: bool = True, cached: bool = False) -> Tensor:
        """VAE-encode images in [-1, 1] (B, 3, H, W) to scaled latents (B, C, H/f, W/f) (pixel space: identity).

        Scaled = z * scaling_factor (SD-1.x), or (z - latents_mean) * scaling_factor / latents_std per channel
        when the VAE config lists those statistics (the SD-XL-family convention; SD-1.x's VAE and the tiny
        VAE of `data synth` list none and use the global scale). ``cached``: read the posterior of an image
        seen before from `posterior_cache` (`GeneratorConfig.posterior_cache_size`; the training path).
        """
        if self.vae is None:
            return images.to(self.unet.dtype)  # (B, 3, H, W)
        images = images.to(self.vae.dtype)
        if cached and self.posterior_cache.max_items:
            moments = self.posterior_cache(lambda x: self.vae.encode(x).latent_dist.parameters, images)  # (B, 2C, h, w)
            dist = DiagonalGaussianDistribution(moments)  # the VAE's own posterior, rebuilt from its moments
        else:
            dist = self.vae.encode(images).latent_dist
        # contiguous: the mean is a channel slice of the moments, and noise drawn `randn_like` it would follow
        # the slice's strides (another order of the same draws for a cached and an uncached posterior)
        latents = (dist.sample() if sample else dist.mode()).contiguous()  # (B, C, h, w) unscaled
        stats = self._latent_stats(latents)
        if stats is None:  # SD-1.x: one global scale
            return latents * self.vae.config.scaling_factor
        mean, std = stats  # (1, C, 1, 1) each: the VAE config's per-channel statistics (SD-XL convention)
        return (latents - mean) * self.vae.config.scaling_factor / std

    def _latent_stats(self, like: Tensor) -> tuple[Tensor, Tensor] | None:
        """The VAE config's per-channel `latents_mean` / `latents_std` as (1, C, 1, 1) tensors like `like`,
        or None when the config has none (SD-1.x VAEs); both or neither must be set."""
        mean, std = self.vae.config.get("latents_mean"), self.vae.config.get("latents_std")
        if mean is None and std is None:
            return None
        c = like.shape[1]
        if mean is None or std is None or len(mean) != c or len(std) != c:
            raise ValueError(f"VAE config: latents_mean and latents_std must both list {c} per-channel values, "
                             f"got {mean!r} and {std!r}")
        shape = (1, c, 1, 1)
        return (torch.tensor(mean, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(std, dtype=like.dtype, device=like.device).view(shape))

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Scaled latents (B, C, h, w) -> images in [0, 1] (B, 3, h*f, w*f); the inverse of `encode_images`' scaling."""
        if self.vae is None:
            return (latents.float() / 2 + 0.5).clamp(0, 1)  # pixels in [-1, 1] -> [0, 1]
        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor  # (B, C, h, w)
        stats = self._latent_stats(latents)
        if stats is not None:  # undo encode_images' per-channel standardisation
            latents = latents * stats[1] + stats[0]
        images = self.vae.decode(latents).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def spatial_conditions(self, conditions: dict | None, latent_hw: tuple[int, int],
                           default_person: Tensor | None = None) -> Tensor | None:
        """Build the extra UNet input channels of the try-on / design variants.

        Args:
            conditions: dict with "agnostic" or "person" (optional if `default_person`), "inpaint_mask", and
                for design "pose_map" and "sketch" (see the module docstring).
            latent_hw: the latent (h, w) to resize the maps to.
            default_person: person image used when `conditions` has neither "agnostic" nor "person".

        Returns:
            float (B, extra, h, w) or None for the plain variant.
        """
        variant = self.config.variant
        if variant == "plain":
            return None
        if conditions is None:
            raise ValueError(f"variant {variant!r} needs conditions with 'inpaint_mask' and a person image")
        needed = ["inpaint_mask"] + (["pose_map", "sketch"] if variant == "design" else [])
        missing = [k for k in needed if k not in conditions]
        if missing:
            raise ValueError(f"variant {variant!r}: conditions lack {missing}; got keys {sorted(conditions)}")
        agnostic = conditions.get("agnostic")
        person = agnostic if agnostic is not None else conditions.get("person", default_person)
        if person is None:
            raise ValueError(f"variant {variant!r}: conditions lack 'agnostic' or 'person' (images in [-1, 1])")
        dtype = self.unet.dtype
        mask = conditions["inpaint_mask"].to(person.device, person.dtype)  # (B, 1, H, W)
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"inpaint_mask must be (B, 1, H, W), got {tuple(mask.shape)}")
        # the dataset's agnostic image as it is; a person image gets its inpaint region set to 0 (mid grey)
        masked_person = agnostic.to(mask) if agnostic is not None else person * (mask < 0.5)  # (B, 3, H, W)
        masked_latent = self.encode_images(masked_person, sample=False)  # (B, C, h, w)
        parts = [F.interpolate(mask, size=latent_hw), masked_latent]
        if variant == "design":
            pose = conditions["pose_map"].to(person.device, person.dtype)
            sketch = conditions["sketch"].to(person.device, person.dtype)
            if pose.shape[1] != NUM_POSE_MAPS or sketch.shape[1] != 1:
                raise ValueError(f"pose_map must be (B, 18, H, W) and sketch (B, 1, H, W); got "
                                 f"{tuple(pose.shape)} and {tuple(sketch.shape)}")
            parts += [F.interpolate(pose, size=latent_hw, mode="bilinear", align_corners=False),
                      F.interpolate(sketch, size=latent_hw, mode="bilinear", align_corners=False)]
        return torch.cat([p.to(dtype) for p in parts], dim=1)  # (B, extra, h, w)

    def control_latents(self, conditions: dict | None, latent_hw: tuple[int, int]) -> Tensor | None:
        """The encoder copy's input (B, C, h, w): the VAE latent of the garment or of the sketch drawing.

        None without `controlnet_copy`. "cloth" reads ``conditions["cloth"]`` (B, 3, H, W) in [-1, 1];
        "sketch" draws ``conditions["sketch"]`` (B, 1, H, W), strokes 1, as black strokes on white.
        """
        if self.control is None:
            return None
        source = self.config.control_input or ("cloth" if self.config.variant == "tryon" else "sketch")
        if conditions is None or source not in conditions:
            raise ValueError(f"controlnet_copy with control_input {source!r}: conditions lack {source!r} "
                             f"(got keys {sorted(conditions or {})})")
        x = conditions[source]
        if source == "sketch":
            if x.dim() != 4 or x.shape[1] != 1:
                raise ValueError(f"sketch must be (B, 1, H, W), got {tuple(x.shape)}")
            x = (1.0 - 2.0 * x.float()).expand(-1, 3, -1, -1)  # (B, 3, H, W): strokes -1 (black) on +1 (white)
        elif x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"cloth must be (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        lat = self.encode_images(x, sample=False)  # (B, C, h', w')
        if tuple(lat.shape[-2:]) != tuple(latent_hw):
            lat = F.interpolate(lat.float(), size=latent_hw, mode="bilinear", align_corners=False)
        return lat.to(self.unet.dtype)  # (B, C, h, w)

    def unet_forward(self, latents: Tensor, timesteps: Tensor | int, cond: Tensor,
                     extra: Tensor | None, control: Tensor | None = None) -> Tensor:
        """One UNet call on [latents, extra] with cross-attention condition `cond` (B, Q, D); with the
        encoder copy, `control` (B, C, h, w) is its input (`control_latents`)."""
        x = latents if extra is None else torch.cat([latents, extra.to(latents.dtype)], dim=1)  # (B, C_in, h, w)
        cond = cond.to(self.unet.dtype)
        pooled = cond.mean(dim=1) if self.config.pooled_condition else None  # (B, D) -> timestep embedding
        if self.control is not None:
            if control is None:
                raise ValueError("controlnet_copy=True: unet_forward needs the control input")
            return self.control(self.unet, x, timesteps, cond, control.to(x.dtype), class_labels=pooled)
        return self.unet(x, timesteps, encoder_hidden_states=cond, class_labels=pooled).sample

    # ------------------------------------------------------------------ training
    def denoise_loss(
        self,
        query_output: Tensor,
        images: Tensor,
        conditions: dict | None = None,
        noise: Tensor | None = None,
        timesteps: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Denoising loss of eq. 7 (phase 1) / eq. 12 (phase 2, try-on, design).

        Args:
            query_output: Q-Former query outputs, float (B, Q, H_q).
            images: target images in [-1, 1], float (B, 3, H, W).
            conditions: spatial conditions for the try-on / design variants (module docstring).
            noise: optional fixed noise (B, C, h, w) (default: standard normal, plus the offset of
                `noise_offset`).
            timesteps: optional fixed timesteps long (B,) (default: uniform over the training steps).

        Returns:
            {"denoise": scalar}.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        b = images.shape[0]
        if query_output.shape[0] != b:
            raise ValueError(f"query_output batch {query_output.shape[0]} != images batch {b}")
        latents = self.encode_images(images, cached=True).to(self.unet.dtype)  # (B, C, h, w)
        if noise is None:
            noise = torch.randn_like(latents)  # (B, C, h, w)
            if self.config.noise_offset > 0:  # offset noise: one constant per item and channel
                offset = torch.randn(latents.shape[:2], device=latents.device, dtype=latents.dtype)  # (B, C)
                noise = noise + self.config.noise_offset * offset[:, :, None, None]
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=latents.device)
        timesteps = timesteps.long().to(latents.device)
        noisy = self.scheduler.add_noise(latents, noise.to(latents), timesteps)  # (B, C, h, w)
        cond = self.encode_condition(query_output)  # (B, Q, D)
        if self.training and self.config.cond_dropout > 0:
            cond, _ = self.apply_condition_dropout(cond)
        extra = self.spatial_conditions(conditions, tuple(latents.shape[-2:]), default_person=images)
        control = self.control_latents(conditions, tuple(latents.shape[-2:]))  # None without the copy
        pred = self.unet_forward(noisy, timesteps, cond, extra, control)  # (B, C, h, w)
        return denoising_loss(pred, latents, noise.to(latents), timesteps, self.scheduler,
                              snr_gamma=self.config.snr_gamma)

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, sampler: Literal["pndm", "dpmsolver++", "ddim"]):
        """An inference scheduler built from the training scheduler's config.

        "pndm": PLMS (PNDM without Runge-Kutta warm-up, as in SD / the paper); "dpmsolver++":
        `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`; "ddim": DDIM (eta 0, MGD).
        """
        # Every training-scheduler field is passed explicitly (diffusers would otherwise let a freshly built
        # scheduler's defaulted fields, e.g. timestep_spacing, fall back to the sampler's own defaults, so a
        # saved-and-reloaded model would sample differently from the original).
        cfg = {k: v for k, v in self.scheduler.config.items() if k != "_use_default_values"}
        if sampler == "pndm":
            if cfg.get("rescale_betas_zero_snr"):
                # PNDM has no zero-SNR option: give it the training betas, the last alpha_bar lifted from 0
                # to 2^-24 as diffusers' DPM-Solver / DDIM do (PLMS divides by sqrt(alpha_bar_t))
                alphas_cumprod = self.scheduler.alphas_cumprod.double().clone()
                alphas_cumprod[-1] = 2.0**-24
                prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
                cfg = {k: v for k, v in cfg.items() if k != "rescale_betas_zero_snr"}
                cfg["trained_betas"] = (1 - alphas_cumprod / prev).tolist()
            return PNDMScheduler.from_config(cfg, skip_prk_steps=True)
        if sampler == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
        if sampler == "ddim":
            # SD's scheduler config says set_alpha_to_one=False; DDPM's own config lacks the key
            return DDIMScheduler.from_config(cfg, set_alpha_to_one=cfg.get("set_alpha_to_one", False))
        raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLERS}")

    @torch.no_grad()
    def sample_latents(
        self,
        query_output: Tensor,
        conditions: dict | None = None,
        sampler: Literal["pndm", "dpmsolver++", "ddim"] = "pndm",
        steps: int = 50,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: Tensor | None = None,
    ) -> Tensor:
        """Denoise latents from query outputs with classifier-free guidance on the learned null condition.

        Args:
            query_output: float (B, Q, H_q).
            conditions: spatial conditions for try-on / design ("person" required here).
            sampler: "pndm" (PLMS, paper: 50 steps), "dpmsolver++" (20 steps suffice) or "ddim".
            steps: number of inference steps.
            guidance_scale: CFG scale (default `config.guidance_scale`); <= 1 runs the conditional model only.
            generator: seeds the initial noise (drawn on the generator's device, then moved).
            height, width: output size in pixels (default: config); multiples of the latent downsampling.
            latents: optional initial noise (B, C, h, w), overriding the generator.

        Returns:
            final scaled latents, float32 (B, C, H/f, W/f); `sample` decodes them.
        """
        height = height or self.config.height
        width = width or self.config.width
        f = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f}, got {height}x{width}")
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        device, dtype = self.unet.device, self.unet.dtype
        b = query_output.shape[0]
        hw = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        scheduler = self.make_sampler(sampler)
        scheduler.set_timesteps(steps, device=device)
        if latents is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            latents = torch.randn((b, self.latent_channels, *hw), generator=generator, device=gen_device)
        latents = latents.to(device, torch.float32) * scheduler.init_noise_sigma  # (B, C, h, w)

        cond = self.encode_condition(query_output.to(device))  # (B, Q, D)
        use_cfg = guidance_scale > 1.0
        extra = self.spatial_conditions(conditions, hw)
        control = self.control_latents(conditions, hw)  # the garment / sketch stays in both CFG halves
        if use_cfg:
            cond = torch.cat([self.null_condition_batch(b).to(cond.dtype), cond])  # (2B, Q, D)
            extra = None if extra is None else torch.cat([extra, extra])
            control = None if control is None else torch.cat([control, control])
        for t in scheduler.timesteps:
            x = torch.cat([latents, latents]) if use_cfg else latents
            x = scheduler.scale_model_input(x, t)
            pred = self.unet_forward(x.to(dtype), t, cond, extra, control).float()  # ((2)B, C, h, w)
            if use_cfg:
                uncond, condp = pred.chunk(2)
                pred = uncond + guidance_scale * (condp - uncond)
            latents = scheduler.step(pred, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def sample(self, query_output: Tensor, conditions: dict | None = None, **kwargs) -> Tensor:
        """Generate images in [0, 1], float (B, 3, H, W); arguments as `sample_latents`.

        Paper setting: `sampler="pndm", steps=50`; the fast one: `sampler="dpmsolver++", steps=20`.
        """
        return self.decode_latents(self.sample_latents(query_output, conditions, **kwargs))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save unet/, vae/ (not in pixel space), scheduler/ (diffusers format), the adapter weights and the config."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(d / "unet")
        if self.vae is not None:
            self.vae.save_pretrained(d / "vae")
        self.scheduler.save_pretrained(d / "scheduler")
        state = {f"image_adapter.{k}": v for k, v in self.image_adapter.state_dict().items()}
        state["null_condition"] = self.null_condition.data
        if self.control is not None:
            state |= {f"control.{k}": v for k, v in self.control.state_dict().items()}
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(d / _WEIGHTS_FILE))
        cfg = asdict(self.config)
        cfg.update(pretrained=None, unet=None, vae=None, unet_input_layout=None)  # unet/ is saved in our order
        (d / _CONFIG_FILE).write_text(json.dumps({"query_dim": self.query_dim, "config": cfg}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides) -> Generator:
        """Load a generator saved by `save_pretrained` (same construction path as a diffusers directory).

        Args:
            directory: the saved directory.
            **overrides: GeneratorConfig fields to change (e.g. cond_dropout).
        """
        d = Path(directory)
        cfg_file = d / _CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"No {_CONFIG_FILE} in {d}: expected a directory written by "
                                    "Generator.save_pretrained")
        meta = json.loads(cfg_file.read_text())
        cfg = {**meta["config"], **overrides, "pretrained": str(d)}
        model = cls(GeneratorConfig(**cfg), query_dim=meta["query_dim"])
        weights = d / _WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"Missing adapter weights {weights}")
        state = load_file(str(weights))
        model.null_condition.data.copy_(state.pop("null_condition"))
        control = {k.removeprefix("control."): state.pop(k) for k in [k for k in state if k.startswith("control.")]}
        if model.control is not None:
            model.control.load_state_dict(control)
        elif control:
            raise ValueError(f"{weights} holds encoder-copy weights but the config has controlnet_copy=False")
        model.image_adapter.load_state_dict({k.removeprefix("image_adapter."): v for k, v in state.items()})
        return model

