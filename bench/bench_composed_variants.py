"""Phase 2 of the demo under config variants: composed retrieval and composed outputs side by side (issue 9).

Each variant trains lightning_configs/tiny/phase2.yaml from the demo's merged phase-1 checkpoint and its
gallery captions (`runs/demo/phase1.ckpt`, `runs/demo/composed/captions/`, written by `make demo`) with
LightningCLI overrides, as `make ablation` does, then reports the Fashion-IQ CIR average (full / w/o cap /
w/o img) and the composed outputs of `demo.composed.composed_outputs` on the validation queries: the share
of composed captions naming the target's changed attributes and of composed images of the target's colour,
with the reference-only floor and the target-only ceiling.

    python bench/bench_composed_variants.py --variant base= \
        --variant adapters_x10='--model.optimizer.lr_multipliers,{"image_adapter": 10, "text_adapter": 10}'

A variant is NAME=ARG,ARG,... (LightningCLI arguments, comma-separated; a JSON argument may not hold a comma:
give it as key=value pairs of separate arguments instead). Appends one JSON line per variant to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from unifashion.api import UniFashion
    from unifashion.demo.composed import CONFIG_NAME, composed_outputs
    from unifashion.demo.pipeline import _config, build_cli, loss_summary
    from unifashion.tasks.cir.evaluate import run_cir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--demo-run", default="runs/demo", help="the make-demo run directory")
    parser.add_argument("--out", default="runs/bench_composed")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME=ARG,ARG,... (repeatable; default: base=, the config as it is)")
    args = parser.parse_args()

    data, demo, out = Path(args.data).resolve(), Path(args.demo_run).resolve(), Path(args.out).resolve()
    merged, captions = demo / "phase1.ckpt", demo / "composed" / "captions"
    if not merged.is_file() or not captions.is_dir():
        raise FileNotFoundError(f"needs {merged} and {captions}: run `make demo` first")
    pattern = str(captions / "next_llava.{split}.{cat}.caption.json")
    for spec in args.variant or ["base="]:
        name, _, rest = spec.partition("=")
        extra = [a for a in rest.split(",") if a]
        cli = build_cli(_config(CONFIG_NAME), out / name, data, [
            "--data.init_args.root", str(data / "fashioniq"), "--data.init_args.target_captions", pattern,
            "--model.init_from", str(merged), "--model.captioner.llm", str(data / "pretrained" / "llm"),
            "--model.generator.vae", str(data / "pretrained" / "vae"), *extra])
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        train_s = time.perf_counter() - start
        cli.model.eval()
        model = UniFashion(cli.model, show_progress=False)
        metrics = run_cir(model, data / "fashioniq", captions)
        row = {"variant": name, "args": extra, "train_s": round(train_s, 1),
               **{k: metrics[f"{k}/fashioniq/mean/avg"] for k in ("cir", "cir_nocap", "cir_noimg")},
               **composed_outputs(model, data), **loss_summary(out / name, "composed")}
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
