"""Tests of the image generation branch (tiny UNet/VAE built from config; no download)."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

from unifashion.losses.denoising import denoising_loss, denoising_target
from unifashion.models.generator import Generator, GeneratorConfig, widen_conv_in

Q, HQ, S = 4, 12, 16  # queries, query width, image size (latents 8x8 with the tiny 2x VAE)



def tiny(**kw) -> GeneratorConfig:
    return GeneratorConfig(num_queries=Q, height=S, width=S, **kw)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """A tiny plain generator saved in the diffusers layout (unet/, vae/, scheduler/)."""
    torch.manual_seed(0)
    gen = Generator(tiny(), query_dim=HQ)
    d = tmp_path_factory.mktemp("plain")
    gen.save_pretrained(d)
    return d


def _conditions(b: int, design: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = {"person": torch.rand(b, 3, S, S, generator=g) * 2 - 1,
         "inpaint_mask": (torch.rand(b, 1, S, S, generator=g) > 0.5).float()}
    if design:
        c["pose_map"] = torch.rand(b, 18, S, S, generator=g)
        c["sketch"] = torch.rand(b, 1, S, S, generator=g)
    return c


def _hand_alphas_cumprod(t_max: int = 1000, b0: float = 0.00085, b1: float = 0.012) -> torch.Tensor:
    betas = torch.linspace(b0**0.5, b1**0.5, t_max, dtype=torch.float64) ** 2  # SD's scaled-linear
    return torch.cumprod(1 - betas, 0)


def test_zero_init_widening_reproduces_unwidened_output():
    torch.manual_seed(0)
    unet = Generator(tiny(), query_dim=HQ).unet.eval()
    wide = widen_conv_in(copy.deepcopy(unet), 28)
    assert wide.config.in_channels == 28 and wide.conv_in.weight.shape[1] == 28
    assert torch.equal(wide.conv_in.weight[:, 4:], torch.zeros_like(wide.conv_in.weight[:, 4:]))
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, Q, 32)
    with torch.no_grad():
        ref = unet(x, 10, encoder_hidden_states=ctx).sample
        for seed in (1, 2):
            extra = torch.randn(2, 24, 8, 8, generator=torch.Generator().manual_seed(seed)) * 5
            out = wide(torch.cat([x, extra], 1), 10, encoder_hidden_states=ctx).sample
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="narrow"):
        widen_conv_in(wide, 4)


@pytest.mark.parametrize("variant,channels", [("tryon", 9), ("design", 28)])
def test_variant_widens_pretrained_unet_from_directory(plain_dir, variant, channels):
    plain = Generator.from_pretrained(plain_dir).eval()
    wide = Generator(tiny(pretrained=str(plain_dir), variant=variant), query_dim=HQ).eval()
    assert plain.unet.config.in_channels == 4 and wide.unet.config.in_channels == channels
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, Q, 32)
    extra = torch.rand(1, channels - 4, 8, 8)
    with torch.no_grad():
        ref = plain.unet(x, 500, encoder_hidden_states=ctx).sample
        out = wide.unet(torch.cat([x, extra], 1), 500, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    # the conditions reach the UNet: a different mask changes the loss
    q, img = torch.randn(1, Q, HQ), torch.rand(1, 3, S, S) * 2 - 1
    cond = _conditions(1, variant == "design")
    with torch.no_grad():
        wide.unet.conv_in.weight.normal_()  # make the new channels matter
        l1 = wide.denoise_loss(q, img, cond, noise=torch.ones(1, 4, 8, 8), timesteps=torch.tensor([300]))
        cond["inpaint_mask"] = 1 - cond["inpaint_mask"]
        l2 = wide.denoise_loss(q, img, cond, noise=torch.ones(1, 4, 8, 8), timesteps=torch.tensor([300]))
    assert not torch.isclose(l1["denoise"], l2["denoise"])


def test_missing_conditions_and_paths_raise(tmp_path):
    gen = Generator(tiny(variant="design"), query_dim=HQ)
    cond = _conditions(1, design=False)
    with pytest.raises(ValueError, match="pose_map"):
        gen.denoise_loss(torch.randn(1, Q, HQ), torch.rand(1, 3, S, S), cond)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        Generator(tiny(pretrained=str(tmp_path / "nowhere")), query_dim=HQ)
    with pytest.raises(ValueError, match="prediction_type"):
        GeneratorConfig(prediction_type="sample")
    with pytest.raises(ValueError, match="queries"):
        gen.encode_condition(torch.randn(1, Q + 1, HQ))


def test_loss_target_epsilon_and_v_against_hand_computed():
    acp = _hand_alphas_cumprod()
    lat, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 499, 999])
    eps_gen = Generator(tiny(prediction_type="epsilon"), query_dim=HQ)
    assert torch.equal(denoising_target(eps_gen.scheduler, lat, noise, t), noise)
    v_gen = Generator(tiny(prediction_type="v_prediction"), query_dim=HQ)
    a = acp[t].float().view(-1, 1, 1, 1)
    v_hand = a.sqrt() * noise - (1 - a).sqrt() * lat
    torch.testing.assert_close(denoising_target(v_gen.scheduler, lat, noise, t), v_hand, rtol=1e-5, atol=1e-5)
    pred = torch.randn_like(lat)
    loss = denoising_loss(pred, lat, noise, t, v_gen.scheduler)
    torch.testing.assert_close(loss["denoise"], ((pred - v_hand) ** 2).mean(), rtol=1e-5, atol=1e-6)
    sched = copy.deepcopy(v_gen.scheduler)
    sched.register_to_config(prediction_type="sample")
    with pytest.raises(ValueError, match="sample"):
        denoising_target(sched, lat, noise, t)


def test_denoise_loss_matches_manual_forward():
    torch.manual_seed(0)
    gen = Generator(tiny(prediction_type="v_prediction"), query_dim=HQ).eval()
    q, img = torch.randn(2, Q, HQ), torch.rand(2, 3, S, S) * 2 - 1
    noise, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    torch.manual_seed(5)
    loss = gen.denoise_loss(q, img, noise=noise, timesteps=t)["denoise"]
    torch.manual_seed(5)  # same VAE posterior sample
    with torch.no_grad():
        lat = gen.vae.encode(img).latent_dist.sample() * gen.vae.config.scaling_factor
        a = _hand_alphas_cumprod()[t].float().view(-1, 1, 1, 1)
        noisy = a.sqrt() * lat + (1 - a).sqrt() * noise  # forward diffusion q(z_t | z_0)
        pred = gen.unet(noisy, t, encoder_hidden_states=gen.image_adapter(q)).sample
        ref = ((pred - (a.sqrt() * noise - (1 - a).sqrt() * lat)) ** 2).mean()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler,steps,cls", [("pndm", 6, PNDMScheduler),
                                                ("dpmsolver++", 4, DPMSolverMultistepScheduler),
                                                ("ddim", 4, None)])
def test_samplers_shape_and_seed_determinism(sampler, steps, cls):
    torch.manual_seed(0)
    gen = Generator(tiny(variant="tryon"), query_dim=HQ).eval()
    q, cond = torch.randn(3, Q, HQ), _conditions(3, design=False)
    sch = gen.make_sampler(sampler)
    if cls is PNDMScheduler:
        assert sch.config.skip_prk_steps
    if cls is DPMSolverMultistepScheduler:
        assert sch.config.algorithm_type == "dpmsolver++"

    def run(seed):
        return gen.sample(q, cond, sampler=sampler, steps=steps, guidance_scale=3.0,
                          generator=torch.Generator().manual_seed(seed), height=S, width=S)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (3, 3, S, S) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_guidance_uses_learned_null_condition():
    torch.manual_seed(0)
    gen = Generator(tiny(), query_dim=HQ).eval()
    q, lat = torch.randn(1, Q, HQ), torch.randn(1, 4, 8, 8)
    kw = dict(sampler="ddim", steps=2, latents=lat, height=S, width=S)
    base = gen.sample(q, guidance_scale=4.0, **kw)
    assert torch.equal(base, gen.sample(q, guidance_scale=4.0, **kw))
    no_cfg = gen.sample(q, guidance_scale=1.0, **kw)
    with torch.no_grad():
        gen.null_condition.add_(1.0)
    assert torch.equal(no_cfg, gen.sample(q, guidance_scale=1.0, **kw))  # null unused without CFG
    assert not torch.equal(base, gen.sample(q, guidance_scale=4.0, **kw))  # ... and used with it


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = Generator(tiny(variant="design", prediction_type="v_prediction"), query_dim=HQ).eval()
    with torch.no_grad():
        gen.unet.conv_in.weight.normal_()
    gen.save_pretrained(tmp_path)
    back = Generator.from_pretrained(tmp_path).eval()
    assert back.config.variant == "design" and back.unet.config.in_channels == 28
    assert back.scheduler.config.prediction_type == "v_prediction"
    sd_a, sd_b = gen.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    q, cond = torch.randn(2, Q, HQ), _conditions(2, design=True)
    kw = dict(sampler="dpmsolver++", steps=3, height=S, width=S)
    torch.testing.assert_close(gen.sample(q, cond, generator=torch.Generator().manual_seed(3), **kw),
                               back.sample(q, cond, generator=torch.Generator().manual_seed(3), **kw))


def test_null_condition_dropout_rate():
    gen = Generator(tiny(cond_dropout=0.25), query_dim=HQ)
    n = 4000
    cond = torch.randn(n, Q, 32)
    out, dropped = gen.apply_condition_dropout(cond, generator=torch.Generator().manual_seed(0))
    rate = dropped.float().mean().item()
    assert abs(rate - 0.25) < 4 * (0.25 * 0.75 / n) ** 0.5  # 4 binomial standard deviations
    assert torch.equal(out[dropped], gen.null_condition.detach().expand(int(dropped.sum()), -1, -1))
    assert torch.equal(out[~dropped], cond[~dropped])


def test_parameter_groups_partition_unet_and_freeze_vae():
    gen = Generator(tiny(variant="tryon"), query_dim=HQ)
    groups = gen.trainable_parameter_groups()
    assert set(groups) == {"image_adapter", "unet", "unet_input"}
    ids = {name: {id(p) for p in ps} for name, ps in groups.items()}
    assert ids["unet"].isdisjoint(ids["unet_input"])
    assert ids["unet"] | ids["unet_input"] == {id(p) for p in gen.unet.parameters()}
    assert id(gen.null_condition) in ids["image_adapter"]
    assert not any(p.requires_grad for p in gen.vae.parameters())
    gen.train()
    assert not gen.vae.training and gen.unet.training


def test_tiny_overfit_one_image():
    torch.manual_seed(0)
    gen = Generator(tiny(cond_dropout=0.0), query_dim=HQ).train()
    q, img = torch.randn(1, Q, HQ), torch.rand(1, 3, S, S) * 2 - 1
    params = [p for ps in gen.trainable_parameter_groups().values() for p in ps]
    opt = torch.optim.Adam(params, lr=2e-3)
    noise = torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 700])
    losses = []
    for _ in range(15):
        loss = gen.denoise_loss(q.expand(2, -1, -1), img.expand(2, -1, -1, -1), noise=noise, timesteps=t)["denoise"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


def test_pooled_condition_feeds_the_mean_query_into_the_timestep_embedding(tmp_path):
    torch.manual_seed(0)
    gen = Generator(tiny(prediction_type="v_prediction", pooled_condition=True), query_dim=HQ).eval()
    assert gen.unet.config.class_embed_type == "projection"
    with torch.no_grad():  # a non-trivial pooled path
        gen.unet.class_embedding.linear_2.weight.normal_()
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([5, 700]), torch.randn(2, Q, 32)
    with torch.no_grad():
        out = gen.unet_forward(x, t, cond, None)
        # reference: the diffusers UNet called by hand, class labels = the mean over the queries
        ref = gen.unet(x, t, encoder_hidden_states=cond, class_labels=cond.mean(1)).sample
        # same queries in another order: cross-attention without positions and the mean are invariant
        perm = gen.unet_forward(x, t, cond[:, torch.randperm(Q)], None)
        # the pooled path matters: another mean, same cross-attention keys, different output
        other = gen.unet(x, t, encoder_hidden_states=cond, class_labels=cond.mean(1) + 1).sample
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(perm, out, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(other, out)
    gen.save_pretrained(tmp_path / "g")
    back = Generator.from_pretrained(tmp_path / "g").eval()
    with torch.no_grad():
        torch.testing.assert_close(back.unet_forward(x, t, cond, None), out)
    # a loaded UNet and the setting must agree, both ways
    with pytest.raises(ValueError, match="pooled_condition"):
        Generator(tiny(unet=str(tmp_path / "g")), query_dim=HQ)


def test_pooled_condition_needs_a_unet_that_has_the_path(plain_dir):
    with pytest.raises(ValueError, match="class_embed_type 'projection'"):
        Generator(tiny(unet=str(plain_dir), pooled_condition=True), query_dim=HQ)


def test_zero_terminal_snr_schedule_and_samplers():
    with pytest.raises(ValueError, match="v_prediction"):
        tiny(zero_terminal_snr=True)
    torch.manual_seed(0)
    gen = Generator(tiny(prediction_type="v_prediction", zero_terminal_snr=True), query_dim=HQ).eval()
    ac = gen.scheduler.alphas_cumprod
    assert float(ac[-1]) == 0.0 and float(ac[0]) > 0.99  # pure noise at t = T (Lin et al. 2024)
    plain = Generator(tiny(prediction_type="v_prediction"), query_dim=HQ).scheduler.alphas_cumprod
    assert float(plain[-1].sqrt()) == pytest.approx(0.068, abs=0.002)  # what SD's schedule leaves
    q = torch.randn(2, Q, HQ)
    for sampler in ("pndm", "dpmsolver++", "ddim"):
        sch = gen.make_sampler(sampler)
        sch.set_timesteps(10)
        assert int(sch.timesteps[0]) == 999  # "trailing": sampling starts where training saw pure noise
        img = gen.sample(q, sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0), height=S, width=S)
        assert torch.isfinite(img).all()
    # PLMS gets the training betas (last alpha_bar lifted to 2^-24, as DPM-Solver does it)
    pndm = gen.make_sampler("pndm")
    torch.testing.assert_close(pndm.alphas_cumprod[:-1], ac[:-1].float(), rtol=1e-4, atol=1e-7)
    assert float(pndm.alphas_cumprod[-1]) == pytest.approx(2.0**-24, rel=1e-3)


def test_noise_offset_adds_one_constant_per_item_and_channel():
    with pytest.raises(ValueError, match="noise_offset"):
        tiny(noise_offset=-0.1)
    torch.manual_seed(0)
    gen = Generator(tiny(prediction_type="v_prediction", noise_offset=0.3), query_dim=HQ).eval()
    plain = copy.deepcopy(gen)
    plain.config.noise_offset = 0.0
    q, img, t = torch.randn(2, Q, HQ), torch.rand(2, 3, S, S) * 2 - 1, torch.tensor([50, 800])
    # the noise drawn by hand in the same order: VAE posterior sample, eps, then one offset per (item, channel)
    torch.manual_seed(7)
    with torch.no_grad():
        lat = gen.vae.encode(img).latent_dist.sample()  # (2, 4, 8, 8)
    eps = torch.randn(lat.shape)  # (2, 4, 8, 8) in plain order (the generator makes its latents contiguous)
    offset = torch.randn(2, 4)
    hand = eps + 0.3 * offset[:, :, None, None]  # (2, 4, 8, 8)
    torch.manual_seed(7)
    drawn = gen.denoise_loss(q, img, timesteps=t)["denoise"]
    torch.manual_seed(7)
    given = plain.denoise_loss(q, img, noise=hand, timesteps=t)["denoise"]
    torch.manual_seed(7)
    no_offset = plain.denoise_loss(q, img, timesteps=t)["denoise"]
    torch.manual_seed(7)
    eps_only = plain.denoise_loss(q, img, noise=eps, timesteps=t)["denoise"]
    torch.testing.assert_close(drawn.detach(), given.detach())
    torch.testing.assert_close(no_offset.detach(), eps_only.detach())  # offset 0: plain N(0, 1) noise
    assert not torch.allclose(drawn, no_offset)


def test_per_channel_latent_statistics_of_the_vae_config():
    torch.manual_seed(0)
    gen = Generator(tiny(), query_dim=HQ).eval()
    img = torch.rand(2, 3, S, S) * 2 - 1
    sf = gen.vae.config.scaling_factor
    with torch.no_grad():
        mode = gen.vae.encode(img).latent_dist.mode()  # (2, 4, 8, 8) unscaled
        torch.testing.assert_close(gen.encode_images(img, sample=False), mode * sf)  # SD-1.x: one scale
        mean, std = [0.5, -1.0, 0.25, 2.0], [2.0, 0.5, 1.0, 4.0]
        gen.vae.register_to_config(latents_mean=mean, latents_std=std)
        z = gen.encode_images(img, sample=False)
        hand = (mode - torch.tensor(mean).view(1, 4, 1, 1)) * sf / torch.tensor(std).view(1, 4, 1, 1)
        torch.testing.assert_close(z, hand)
        real = (gen.vae.decode(mode).sample / 2 + 0.5).clamp(0, 1)  # the VAE's own decode of the same latent
        torch.testing.assert_close(gen.decode_latents(z), real, rtol=1e-4, atol=1e-5)
        gen.vae.register_to_config(latents_mean=mean[:3], latents_std=std[:3])
        with pytest.raises(ValueError, match="latents_mean and latents_std"):
            gen.encode_images(img)
        gen.vae.register_to_config(latents_mean=mean, latents_std=None)
        with pytest.raises(ValueError, match="latents_mean and latents_std"):
            gen.decode_latents(z)


def test_min_snr_weighting_against_hand_computed_weights():
    acp = _hand_alphas_cumprod()
    lat, noise, pred = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([5, 400, 990])
    snr = acp[t] / (1 - acp[t])  # (3,) float64: ~1e3 (nearly clean) ... ~5e-3 (nearly pure noise)
    assert snr[0] > 5 > snr[2]  # the cap acts on the first step only
    for prediction_type, target, denom in (("epsilon", lambda a: noise, snr),
                                           ("v_prediction", lambda a: a.sqrt() * noise - (1 - a).sqrt() * lat,
                                            snr + 1)):
        gen = Generator(tiny(prediction_type=prediction_type), query_dim=HQ)
        a = acp[t].float().view(-1, 1, 1, 1)
        per_item = ((pred - target(a)) ** 2).mean(dim=(1, 2, 3))  # (3,)
        weights = torch.minimum(snr, torch.full_like(snr, 5.0)) / denom  # Hang et al. 2023 with gamma 5
        got = denoising_loss(pred, lat, noise, t, gen.scheduler, snr_gamma=5.0)["denoise"]
        torch.testing.assert_close(got, (weights.float() * per_item).mean(), rtol=1e-5, atol=1e-6)
        plain = denoising_loss(pred, lat, noise, t, gen.scheduler)["denoise"]
        torch.testing.assert_close(plain, per_item.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="snr_gamma"):
        tiny(snr_gamma=0.0)


def test_generator_passes_snr_gamma_to_the_loss():
    torch.manual_seed(0)
    gen = Generator(tiny(prediction_type="v_prediction", snr_gamma=1.0), query_dim=HQ).eval()
    plain = copy.deepcopy(gen)
    plain.config.snr_gamma = None
    q, img = torch.randn(2, Q, HQ), torch.rand(2, 3, S, S) * 2 - 1
    noise, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 950])
    torch.manual_seed(5)
    weighted = gen.denoise_loss(q, img, noise=noise, timesteps=t)["denoise"]
    torch.manual_seed(5)
    with torch.no_grad():
        lat = gen.encode_images(img)
        noisy = gen.scheduler.add_noise(lat, noise, t)
        pred = gen.unet_forward(noisy, t, gen.encode_condition(q), None)
        per_item = ((pred - gen.scheduler.get_velocity(lat, noise, t)) ** 2).mean(dim=(1, 2, 3))  # (2,)
        acp = _hand_alphas_cumprod()[t]
        snr = acp / (1 - acp)
        w = (torch.clamp(snr, max=1.0) / (snr + 1)).float()
    torch.testing.assert_close(weighted.detach(), (w * per_item).mean(), rtol=1e-4, atol=1e-6)
    torch.manual_seed(5)
    assert not torch.allclose(plain.denoise_loss(q, img, noise=noise, timesteps=t)["denoise"], weighted)


def test_posterior_cache_draws_from_the_vaes_own_posterior_and_encodes_each_image_once():
    torch.manual_seed(0)
    gen = Generator(tiny(posterior_cache_size=8), query_dim=HQ).eval()
    images = torch.rand(3, 3, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    calls = []
    encode = gen.vae.encode
    gen.vae.encode = lambda x: calls.append(x.shape[0]) or encode(x)
    torch.manual_seed(5)
    reference = gen.encode_images(images)  # (3, C, h, w): the VAE's posterior, sampled
    torch.manual_seed(5)
    first = gen.encode_images(images, cached=True)  # computes and stores the three posteriors
    torch.manual_seed(5)
    again = gen.encode_images(images[[2, 0, 1]], cached=True)  # read back, in another order
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    assert calls == [3, 3]  # the uncached call and the first cached one; nothing for the third
    assert (gen.posterior_cache.hits, gen.posterior_cache.misses) == (3, 3)
    # same noise draw, rows permuted: the mean and std of each image came back with it
    torch.manual_seed(5)
    noise = torch.randn(reference.shape)  # as diffusers' sampler draws (randn_like would follow a view's strides)
    posterior = encode(images).latent_dist
    mean = posterior.mean * gen.vae.config.scaling_factor
    std = posterior.std * gen.vae.config.scaling_factor
    torch.testing.assert_close(again, mean[[2, 0, 1]] + std[[2, 0, 1]] * noise, rtol=1e-5, atol=1e-6)
    # the denoising loss with the cache equals the loss without it (same draws)
    plain = Generator(tiny(), query_dim=HQ).eval()
    plain.load_state_dict(gen.state_dict())
    q = torch.randn(3, Q, HQ, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 500, 990])
    losses = []
    for g in (gen, plain):
        torch.manual_seed(7)
        losses.append(g.denoise_loss(q, images, timesteps=t)["denoise"])
    torch.testing.assert_close(losses[0], losses[1])


def test_posterior_cache_size_must_not_be_negative():
    with pytest.raises(ValueError, match="posterior_cache_size"):
        tiny(posterior_cache_size=-1)
