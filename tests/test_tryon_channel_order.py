"""Widening conv_in from a Paint-by-Example / StableVITON checkpoint keeps each input channel's weights with
its meaning (models/generator.py: `unet_input_layout`, `remap_conv_in`)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from unifashion.models.generator import Generator, GeneratorConfig, parse_layout

Q, HQ, S = 4, 12, 16


def _labelled_unet(directory, in_channels: int) -> None:
    """A tiny UNet whose conv_in weights of input channel k all equal k + 1 (its label), saved."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    with torch.no_grad():
        for k in range(in_channels):
            unet.conv_in.weight[:, k] = k + 1
    unet.save_pretrained(directory)


def _labels(gen: Generator) -> list[int]:
    w = gen.unet.conv_in.weight  # (C_out, C_in, 3, 3); every channel is constant
    assert all(torch.all(w[:, k] == w[0, k, 0, 0]) for k in range(w.shape[1]))
    return [int(w[0, k, 0, 0]) for k in range(w.shape[1])]


def _gen(unet_dir, **kw) -> Generator:
    return Generator(GeneratorConfig(unet=str(unet_dir), num_queries=Q, height=S, width=S, **kw), query_dim=HQ)


def test_paint_by_example_order_lands_in_our_order(tmp_path):
    _labelled_unet(tmp_path / "pbe", 9)  # PbE: latent 1-4, masked latent 5-8, mask 9
    pbe = ("latent", "masked_latent", "mask")
    tryon = _gen(tmp_path / "pbe", variant="tryon", unet_input_layout=pbe)
    assert _labels(tryon) == [1, 2, 3, 4, 9, 5, 6, 7, 8]  # ours: latent, mask, masked latent
    design = _gen(tmp_path / "pbe", variant="design", unet_input_layout=pbe)
    assert _labels(design) == [1, 2, 3, 4, 9, 5, 6, 7, 8] + [0] * 19  # pose and sketch: zero (new)
    # without the layout the checkpoint is taken as a prefix of our order (what SD-inpainting needs)
    assert _labels(_gen(tmp_path / "pbe", variant="tryon")) == list(range(1, 10))


def test_stableviton_densepose_channels_are_dropped(tmp_path):
    _labelled_unet(tmp_path / "sv", 13)  # StableVITON: latent, agnostic latent, mask, densepose latent
    gen = _gen(tmp_path / "sv", variant="tryon", unet_input_layout=("latent", "masked_latent", "mask", "densepose:4"))
    assert _labels(gen) == [1, 2, 3, 4, 9, 5, 6, 7, 8] and gen.unet.config.in_channels == 9


def test_remapped_unet_computes_what_the_checkpoint_computes(tmp_path):
    _labelled_unet(tmp_path / "pbe", 9)
    pbe_unet = UNet2DConditionModel.from_pretrained(tmp_path / "pbe").eval()
    with torch.no_grad():  # random weights so that every channel counts differently
        pbe_unet.conv_in.weight.normal_()
    pbe_unet.save_pretrained(tmp_path / "pbe_random")
    gen = _gen(tmp_path / "pbe_random", variant="tryon", unet_input_layout=("latent", "masked_latent", "mask")).eval()
    g = torch.Generator().manual_seed(0)
    lat, masked, mask = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g), \
        (torch.rand(1, 1, 8, 8, generator=g) > 0.5).float()
    ctx = torch.randn(1, Q, 32, generator=g)
    with torch.no_grad():
        ref = pbe_unet(torch.cat([lat, masked, mask], 1), 300, encoder_hidden_states=ctx).sample  # PbE's order
        out = gen.unet(torch.cat([lat, mask, masked], 1), 300, encoder_hidden_states=ctx).sample  # ours
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_saved_generator_is_not_remapped_twice(tmp_path):
    _labelled_unet(tmp_path / "pbe", 9)
    gen = _gen(tmp_path / "pbe", variant="tryon", unet_input_layout=("latent", "masked_latent", "mask"))
    gen.save_pretrained(tmp_path / "saved")
    back = Generator.from_pretrained(tmp_path / "saved")
    assert back.config.unet_input_layout is None
    assert _labels(back) == [1, 2, 3, 4, 9, 5, 6, 7, 8]


def test_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig(unet_input_layout=("latent", "densepose"))
    with pytest.raises(ValueError, match="twice"):
        GeneratorConfig(unet_input_layout=("latent", "latent"))
    with pytest.raises(ValueError, match="channels"):
        GeneratorConfig(unet_input_layout=("latent", "mask:3"))
    assert parse_layout(("latent", "mask", "extra:2"), 4) == [("latent", 4), ("mask", 1), ("extra", 2)]
    _labelled_unet(tmp_path / "pbe", 9)
    with pytest.raises(ValueError, match="adds up to 5"):
        _gen(tmp_path / "pbe", variant="tryon", unet_input_layout=("latent", "mask"))
