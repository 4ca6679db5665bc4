"""The trainable UNet-encoder copy joined by zero cross-attention (Figure 3, models/control_copy.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fixtures_vitonhd import write_vitonhd
from tiny import tiny_encoder_config

from unifashion.data.vitonhd import VitonHDDataModule
from unifashion.models.control_copy import ControlCopy, sinusoidal_position_2d
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig

Q, HQ, S = 4, 12, 16  # queries, query width, image side (8x8 latents with the tiny 2x VAE)
PIXEL = dict(pixel_space=True, num_queries=Q, height=16, width=12, sample_size=16, block_out_channels=(16, 32, 32),
             attention_from_block=1, cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)


def latent_cfg(**kw) -> GeneratorConfig:
    return GeneratorConfig(num_queries=Q, height=S, width=S, **kw)


def _conditions(b: int, h: int, w: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"agnostic": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
            "inpaint_mask": (torch.rand(b, 1, h, w, generator=g) > 0.5).float(),
            "cloth": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
            "pose_map": torch.rand(b, 18, h, w, generator=g),
            "sketch": (torch.rand(b, 1, h, w, generator=g) > 0.8).float()}


@pytest.mark.parametrize("cfg", [latent_cfg(variant="tryon", controlnet_copy=True),
                                 latent_cfg(variant="design", controlnet_copy=True),
                                 GeneratorConfig(**PIXEL, variant="tryon", controlnet_copy=True),
                                 GeneratorConfig(**PIXEL, variant="design", controlnet_copy=True,
                                                 pooled_condition=True)],
                         ids=["latent-tryon", "latent-design", "pixel-tryon-3-blocks", "pixel-design-pooled"])
def test_output_equals_plain_unet_at_init_whatever_the_control(cfg):
    torch.manual_seed(0)
    gen = Generator(cfg, query_dim=HQ).eval()
    h, w = cfg.height // gen.vae_scale_factor, cfg.width // gen.vae_scale_factor
    c_in = gen.unet.config.in_channels
    x, ctx = torch.randn(2, c_in, h, w), torch.randn(2, Q, gen.unet.config.cross_attention_dim)
    t = torch.tensor([10, 700])
    pooled = ctx.mean(1) if cfg.pooled_condition else None  # (2, D): the pooled condition's class labels
    with torch.no_grad():
        ref = gen.unet(x, t, encoder_hidden_states=ctx, class_labels=pooled).sample  # the library's plain forward
        if pooled is not None:  # the pooled condition does reach the output
            assert not torch.allclose(ref, gen.unet(x, t, encoder_hidden_states=ctx, class_labels=pooled * 0).sample)
        for seed in (1, 2):
            control = torch.randn(2, gen.latent_channels, h, w, generator=torch.Generator().manual_seed(seed)) * 3
            out = gen.control(gen.unet, x, t, ctx, control, class_labels=pooled)
            assert torch.equal(out, ref)  # bitwise: h + 0 == h
    # and through the generator's own path (conditions -> control latents -> controlled UNet)
    q = torch.randn(2, Q, HQ)
    cond = _conditions(2, cfg.height, cfg.width)
    noise = torch.randn(2, gen.latent_channels, h, w)
    with torch.no_grad():
        torch.manual_seed(3)  # the same VAE posterior sample
        with_copy = gen.denoise_loss(q, cond["agnostic"], cond, noise=noise, timesteps=t)["denoise"]
        gen.control = None  # the same generator without the copy
        torch.manual_seed(3)
        plain = gen.denoise_loss(q, cond["agnostic"], cond, noise=noise, timesteps=t)["denoise"]
    assert torch.equal(with_copy, plain)


def test_copy_starts_from_the_unet_encoder_weights():
    torch.manual_seed(0)
    gen = Generator(latent_cfg(variant="tryon", controlnet_copy=True), query_dim=HQ)
    sd_u, sd_c = gen.unet.down_blocks.state_dict(), gen.control.down_blocks.state_dict()
    assert sd_u.keys() == sd_c.keys() and all(torch.equal(sd_u[k], sd_c[k]) for k in sd_u)
    assert all(torch.equal(a, b) for a, b in zip(gen.unet.mid_block.state_dict().values(),
                                                 gen.control.mid_block.state_dict().values()))
    # conv_in of the copy: the UNet's latent-channel weights (4 of its 9 input channels)
    assert torch.equal(gen.control.conv_in.weight, gen.unet.conv_in.weight[:, :4])
    # separate tensors: training the copy leaves the UNet alone
    assert gen.control.down_blocks[0].resnets[0].conv1.weight.data_ptr() != \
        gen.unet.down_blocks[0].resnets[0].conv1.weight.data_ptr()
    assert set(gen.trainable_parameter_groups()) == {"image_adapter", "unet", "unet_input", "unet_control"}
    # one zero cross-attention per up block that has cross-attention (tiny UNet: up block 1 only)
    attending = [str(i) for i, b in enumerate(gen.unet.up_blocks) if type(b).__name__ == "CrossAttnUpBlock2D"]
    assert list(gen.control.zero_attention) == attending == ["1"]


def test_one_step_moves_the_zero_layers_and_then_the_control_matters():
    torch.manual_seed(0)
    gen = Generator(latent_cfg(variant="tryon", controlnet_copy=True, cond_dropout=0.0), query_dim=HQ).train()
    params = list(gen.control.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    q, cond = torch.randn(2, Q, HQ), _conditions(2, S, S)
    target = torch.rand(2, 3, S, S) * 2 - 1
    loss = gen.denoise_loss(q, target, cond, noise=torch.randn(2, 4, 8, 8), timesteps=torch.tensor([50, 500]))
    loss["denoise"].backward()
    zero = gen.control.zero_parameters()
    assert all(p.abs().sum() == 0 for p in zero)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in zero[::2])  # the output weights
    # while W_out = 0 nothing flows back into the attention inputs (d loss / d W_q = W_out^T ... = 0)
    assert next(iter(gen.control.zero_attention.values())).to_q.weight.grad.abs().sum() == 0
    opt.step()
    assert all(p.abs().sum() > 0 for p in zero[::2])
    gen.eval()
    h = 8
    x, ctx = torch.randn(1, 9, h, h), torch.randn(1, Q, 32)
    with torch.no_grad():
        a = gen.control(gen.unet, x, 10, ctx, torch.randn(1, 4, h, h, generator=torch.Generator().manual_seed(1)))
        b = gen.control(gen.unet, x, 10, ctx, torch.randn(1, 4, h, h, generator=torch.Generator().manual_seed(2)))
        plain = gen.unet(x, 10, encoder_hidden_states=ctx).sample
    assert not torch.equal(a, b) and not torch.equal(a, plain)


def test_save_load_round_trip_keeps_the_copy(tmp_path):
    torch.manual_seed(0)
    gen = Generator(latent_cfg(variant="design", controlnet_copy=True), query_dim=HQ).eval()
    with torch.no_grad():
        for p in gen.control.zero_parameters():
            p.normal_()
    gen.save_pretrained(tmp_path)
    back = Generator.from_pretrained(tmp_path).eval()
    sd_a, sd_b = gen.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys() and any(k.startswith("control.") for k in sd_a)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    q, cond = torch.randn(1, Q, HQ), _conditions(1, S, S)
    kw = dict(sampler="ddim", steps=2, height=S, width=S)
    torch.testing.assert_close(gen.sample(q, cond, generator=torch.Generator().manual_seed(0), **kw),
                               back.sample(q, cond, generator=torch.Generator().manual_seed(0), **kw))
    with pytest.raises(ValueError, match="controlnet_copy"):
        Generator.from_pretrained(tmp_path, controlnet_copy=False)


def test_config_errors():
    with pytest.raises(ValueError, match="plain"):
        GeneratorConfig(controlnet_copy=True)
    gen = Generator(latent_cfg(variant="tryon", controlnet_copy=True), query_dim=HQ)
    cond = _conditions(1, S, S)
    del cond["cloth"]
    with pytest.raises(ValueError, match="cloth"):
        gen.denoise_loss(torch.randn(1, Q, HQ), torch.rand(1, 3, S, S), cond)


def test_position_code_against_hand_values():
    pe = sinusoidal_position_2d(2, 3, 8)  # quarter = 2 frequencies: 1 and 1e-2
    y, x = 1, 2
    row = pe[y * 3 + x]
    f = torch.tensor([1.0, 0.01])
    hand = torch.cat([torch.sin(y * f), torch.cos(y * f), torch.sin(x * f), torch.cos(x * f)])
    torch.testing.assert_close(row, hand)


def test_unsupported_unet_is_refused():
    torch.manual_seed(0)
    gen = Generator(latent_cfg(variant="tryon"), query_dim=HQ)
    gen.unet.register_to_config(class_embed_type="timestep")
    with pytest.raises(ValueError, match="class_embed_type"):
        ControlCopy(gen.unet, 4)


def test_finetune_tryon_trains_the_copy_through_the_module(tmp_path):
    root = write_vitonhd(tmp_path / "viton")
    tok = tmp_path / "tok"
    words = "red short-sleeve t-shirt cotton top crew neck blue striped shirt black white".split()
    train_wordpiece_tokenizer([" ".join(words)] * 5 + words, tok, vocab_size=200)
    L.seed_everything(0)
    gen = {**PIXEL, "variant": "tryon", "controlnet_copy": True, "num_train_timesteps": 100}
    model = UniFashionModule(tiny_encoder_config(tok, freeze_vision=True), generator=gen, phase="finetune_tryon",
                             optimizer=OptimizerConfig(lr=1e-2))
    assert model.trainable_counts["unet_control"] > 0 and model.trainable_counts["unet"] == 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = VitonHDDataModule(str(root), batch_size=2, height=16, width=12, encoder_image_size=16, max_val_items=None)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(model, dm)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.startswith("generator.control.zero_attention.") and k.endswith("to_out.weight") for k in moved)
    assert not any(k.startswith("generator.unet.") and not k.startswith("generator.unet.conv_in") for k in moved)
