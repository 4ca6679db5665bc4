"""Train one of the demo's generation stages under config variants and compare them (issue 12).

Each variant is the demo's `generation` stage (lightning_configs/tiny/phase1_image_generation.yaml from the
demo's retrieval checkpoint, `demo.generation.generation_stage`), or its `tryon` / `design` stage
(`demo.tryon.tryon_stage`), with LightningCLI overrides, written to its own run directory. The table gives
the stage's metrics: for `generation` on the solid-colour validation products (FID-proxy, colour / garment /
sleeve accuracy in the garment region; the real-image ceiling in the JSON lines), for try-on / design on the
test persons (paired SSIM, unpaired FID-proxy, colour of the upper clothes against the requested garment's:
for design the colour is only in the text), and the training time.

    python bench/bench_generator_training.py --data data/synthetic --ckpt runs/demo/retrieval.ckpt \
        --out runs/bench_generator --variant base= --variant offset=--model.generator.noise_offset,0.1
    python bench/bench_generator_training.py --stage design --variant pooled=--model.generator.pooled_condition,true

A variant is NAME=ARG,ARG,... (the LightningCLI arguments, comma-separated; empty for the config as it is).
Results are appended to OUT/results.jsonl, one line per variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

KEYS = {"generation": ("fig/fashiongen/queries/FID-proxy", "fig/fashiongen/queries/colour_acc",
                        "fig/fashiongen/queries/garment_acc", "fig/fashiongen/queries/sleeve_acc"),
        "tryon": ("fig/vitonhd/paired/SSIM", "fig/vitonhd/unpaired/FID-proxy", "fig/vitonhd/paired/colour_acc",
                  "fig/vitonhd/unpaired/colour_acc"),
        "design": ("fig/mgd-vitonhd/paired/SSIM", "fig/mgd-vitonhd/unpaired/FID-proxy",
                   "fig/mgd-vitonhd/paired/colour_acc", "fig/mgd-vitonhd/unpaired/colour_acc")}


def main() -> None:
    from unifashion.demo.generation import GenerationEval, generation_stage
    from unifashion.demo.pipeline import Timer, _config, build_cli
    from unifashion.demo.tryon import tryon_stage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=tuple(KEYS), default="generation")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--ckpt", default="runs/demo/retrieval.ckpt")
    parser.add_argument("--out", default="runs/bench_generator")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME=ARG,ARG,... (repeatable; default: base=, the config as it is)")
    parser.add_argument("--items", type=int, default=None, help="solid-colour validation products generated "
                        "(default: all)")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.variant or ["base="]:
        name, _, rest = spec.partition("=")
        extra = [a for a in rest.split(",") if a]
        timer = Timer()
        start = time.perf_counter()
        data, ckpt = Path(args.data).resolve(), Path(args.ckpt).resolve()
        if args.stage == "generation":
            metrics = generation_stage(data, out / name, ckpt, timer, build_cli, _config,
                                       eval_settings=GenerationEval(max_items=args.items), extra_args=extra)
        else:
            metrics = tryon_stage(data, out / name, ckpt, timer, build_cli, _config, extra_args=extra,
                                  kind=args.stage)
        train_s = next((v for k, v in timer.times.items() if k.startswith("time/train")), None)
        row = {"stage": args.stage, "variant": name, "args": extra,
               "wall_s": round(time.perf_counter() - start, 1), "train_s": train_s}
        row |= {k: v for k, v in metrics.items() if k.startswith(("fig/", "baseline/fig/"))}
        rows.append(row)
        with open(out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    keys = (*KEYS[args.stage], "train_s")
    print("\n" + " | ".join(("variant", *keys)))
    for r in rows:
        print(" | ".join((r["variant"], *(f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in keys))))


if __name__ == "__main__":
    main()
