"""Paper-size timing on a GPU: SD-1.4 UNet + VAE built from config (random weights, no download), 512x384.

Times, in bf16: one training step (denoise loss forward + backward, batch `--batch`), one CFG sampling
step (UNet on 2 x batch), and a full sample of one image with PLMS-50 (paper: 3.15 s/image on an A100)
and DPM-Solver++-20. Prints one JSON object. Needs CUDA (exits with a message otherwise; `--tiny
--device cpu` runs the same code on a tiny model to check the script).

    .venv/bin/python bench/gpu_unet_512x384.py [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from unifashion.models.generator import Generator, GeneratorConfig

SD14 = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, vae_block_out_channels=(128, 256, 512, 512), vae_layers_per_block=2,
            sample_size=64, height=512, width=384)
TINY = dict(height=32, width=32, sample_size=16)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model (script check)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_unet_512x384.py: no CUDA device available; run it on a GPU machine "
                 "(or `--tiny --device cpu` to check the script)")
    device = torch.device(args.device)
    dtype = torch.bfloat16
    cfg = GeneratorConfig(num_queries=32, cond_dropout=0.1, **(TINY if args.tiny else SD14))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with device:
        gen = Generator(cfg, query_dim=768)
    gen.to(device=device, dtype=dtype)
    build_s = time.perf_counter() - t0
    b, h, w = args.batch, cfg.height, cfg.width
    q = torch.randn(b, 32, 768, device=device, dtype=dtype)
    images = torch.rand(b, 3, h, w, device=device, dtype=dtype) * 2 - 1
    opt = torch.optim.AdamW([p for ps in gen.trainable_parameter_groups().values() for p in ps], lr=1e-4)

    def train_step() -> None:
        gen.train()
        loss = gen.denoise_loss(q, images)["denoise"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    f = gen.vae_scale_factor
    lat = torch.randn(2 * b, 4, h // f, w // f, device=device, dtype=dtype)  # (2B, 4, 64, 48) at paper size
    cond = torch.randn(2 * b, 32, gen.unet.config.cross_attention_dim, device=device, dtype=dtype)

    @torch.no_grad()
    def sampling_step() -> None:
        gen.unet(lat, 500, encoder_hidden_states=cond)

    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": "bf16",
           "image": [h, w], "latent": list(lat.shape[-2:]), "batch": b, "build_s": build_s,
           "unet_params_M": sum(p.numel() for p in gen.unet.parameters()) / 1e6}
    out["train_step_s"] = timed(train_step, device, warmup=2, repeats=args.repeats)
    out["train_images_per_s"] = b / out["train_step_s"]
    gen.eval()
    out["cfg_sampling_step_s"] = timed(sampling_step, device, warmup=2, repeats=args.repeats)
    q1 = q[:1]
    for name, sampler, steps in (("plms50", "pndm", 50), ("dpmpp20", "dpmsolver++", 20)):
        out[f"{name}_s_per_image"] = timed(
            lambda s=sampler, n=steps: gen.sample(q1, sampler=s, steps=n, guidance_scale=7.5,
                                                  generator=torch.Generator().manual_seed(1234)),
            device, warmup=1, repeats=max(1, args.repeats - 1))
    out["speedup_dpmpp20_over_plms50"] = out["plms50_s_per_image"] / out["dpmpp20_s_per_image"]
    out["paper_plms50_s_per_image_a100"] = 3.15
    if device.type == "cuda":
        out["max_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
