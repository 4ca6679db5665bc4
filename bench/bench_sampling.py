"""Sampling latency and quality on CPU: PLMS-50 (paper) vs DPM-Solver++-20, same tiny UNet, same run.

Quality proxy: mean squared error of each sampler's final latents (and decoded images) against a
PLMS-200 reference started from the same seeded noise (all three integrate the same probability-flow
ODE, so a smaller error means a more accurate solver). The UNet is untrained: the numbers compare the
solvers, not image quality. Prints one JSON object.

    .venv/bin/python bench/bench_sampling.py [--batch 2] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unifashion.models.generator import Generator, GeneratorConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2, help="images per sample call")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (latents: size / 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per sampler (best is kept)")
    ap.add_argument("--reference-steps", type=int, default=200, help="PLMS steps of the reference")
    ap.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = GeneratorConfig(num_queries=8, height=args.size, width=args.size, sample_size=args.size // 2,
                          block_out_channels=(32, 64), cross_attention_dim=64)
    gen = Generator(cfg, query_dim=32).eval()
    q = torch.randn(args.batch, 8, 32, generator=torch.Generator().manual_seed(args.seed))

    def run(sampler: str, steps: int) -> torch.Tensor:
        return gen.sample_latents(q, sampler=sampler, steps=steps, guidance_scale=args.guidance,
                                  generator=torch.Generator().manual_seed(args.seed))

    ref = run("pndm", args.reference_steps)
    ref_img = gen.decode_latents(ref)
    result = {"device": "cpu", "threads": args.threads, "batch": args.batch, "image": [args.size, args.size],
              "reference": f"pndm-{args.reference_steps}", "guidance_scale": args.guidance}
    for name, sampler, steps in (("plms50", "pndm", 50), ("dpmpp20", "dpmsolver++", 20)):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            lat = run(sampler, steps)
            best = min(best, time.perf_counter() - t0)
        img = gen.decode_latents(lat)
        result[name] = {
            "s_per_image": best / args.batch,
            "unet_calls": steps + (1 if sampler == "pndm" else 0),  # PLMS warm-up repeats one step
            "latent_mse_vs_ref": float(((lat - ref) ** 2).mean()),
            "latent_rel_mse_vs_ref": float(((lat - ref) ** 2).mean() / (ref**2).mean()),
            "image_mse_vs_ref": float(((img - ref_img) ** 2).mean()),
        }
    result["speedup_dpmpp20_over_plms50"] = result["plms50"]["s_per_image"] / result["dpmpp20"]["s_per_image"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
