"""Sampler quality on the TRAINED demo generator: PLMS-50 (the paper's) vs DPM-Solver++-20 and -10.

Every sampler starts from the same seeded noise per product (`demo.generation.initial_noise`) and
generates the first view of the same solid-colour validation products from their queries; each is
scored with the demo's evaluation (`demo.generation.evaluate_generation`): FID-proxy against the real
images at the generator's resolution, colour / garment-type / sleeve accuracy
(`tasks/fig/controllability.py`), seconds per image (sampling + VAE decoding, `--threads` CPU threads),
and the mean absolute pixel difference to the PLMS-50 image of the same seed (0-255 units: how far a
faster solver lands from the paper's). Prints a Markdown table and one JSON object.

    .venv/bin/python bench/bench_sampling_quality.py --ckpt runs/demo/generation.ckpt \
        --data data/synthetic [--items 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from unifashion.demo.generation import GenerationEval, evaluate_generation
from unifashion.module import UniFashionModule

SAMPLERS = (("pndm", 50), ("dpmsolver++", 20), ("dpmsolver++", 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="runs/demo/generation.ckpt")
    ap.add_argument("--data", default="data/synthetic", help="the synthetic root")
    ap.add_argument("--items", type=int, default=64, help="solid-colour validation products")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint {ckpt}: run `make demo` (or `unifashion demo --stages generation`) first")
    model = UniFashionModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False).eval()
    results, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for sampler, steps in SAMPLERS:
            ev = GenerationEval(max_items=args.items, sampler=sampler, steps=steps, guidance_scale=args.guidance,
                                seed=args.seed, feature="proxy")
            timing, keep = {}, {}
            m = evaluate_generation(model, Path(args.data), Path(tmp) / f"{sampler}{steps}", settings=ev,
                                    timing=timing, keep=keep)
            if reference is None:
                reference = keep["generated"]
            diff = float((keep["generated"] - reference).abs().mean() * 255)
            results.append({"sampler": sampler, "steps": steps, "s_per_image": timing["s_per_image"],
                            "diff_to_plms50": diff, **{k.rsplit("/", 2)[-2] + "/" + k.rsplit("/", 1)[-1]: v
                                                       for k, v in m.items()}})
    print("| sampler | steps | FID-proxy | colour % | garment % | sleeve % | s / image | mean abs diff to PLMS-50 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {'PLMS' if r['sampler'] == 'pndm' else 'DPM-Solver++'} | {r['steps']} | "
              f"{r['queries/FID-proxy']:.2f} | {r['queries/colour_acc']:.1f} | {r['queries/garment_acc']:.1f} | "
              f"{r['queries/sleeve_acc']:.1f} | {r['s_per_image']:.3f} | {r['diff_to_plms50']:.2f} |")
    r = results[0]
    print(f"real-image ceiling: colour {r['real/colour_acc']:.1f} %, garment {r['real/garment_acc']:.1f} %, "
          f"sleeve {r['real/sleeve_acc']:.1f} %")
    out = {"ckpt": str(ckpt), "items": args.items, "threads": args.threads, "results": results}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
