"""`unifashion data synth`: write the synthetic benchmark (official layouts) + its tiny pretrained parts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    data = sub.add_parser(name, help="datasets: write the synthetic benchmark")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    synth = dsub.add_parser("synth", help="write the synthetic fashion benchmark in the official layouts")
    synth.add_argument("--out", default="data/synthetic", help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scale", choices=("tiny", "small", "medium"), default="small")
    synth.add_argument(
        "--datasets", nargs="+", default=None, help="subset of fashiongen fashion200k fashioniq vitonhd"
    )
    synth.add_argument(
        "--lm-steps", type=int, default=100,
        help="pretraining steps of the tiny caption LLM written to <out>/pretrained/llm (0: do not write it)",
    )


def synthesize(out: str | Path, seed: int = 0, scale: str = "small", datasets=None, lm_steps: int = 100) -> int:
    """Writes the benchmark, the tiny tokenizers and (lm_steps > 0) the tiny pretrained caption LLM."""
    from unifashion.data.synthetic.benchmark import write_benchmark
    from unifashion.models.tiny_assets import TINY_LLM_DIR, write_tiny_llm, write_tiny_tokenizers

    out = Path(out)
    start = time.perf_counter()
    kwargs = {"datasets": tuple(datasets)} if datasets else {}
    summary = write_benchmark(out, seed=seed, scale=scale, **kwargs)
    tokenizers = write_tiny_tokenizers(out)
    print(summary)
    for name, path in tokenizers.items():
        print(f"tiny {name} tokenizer: {path}")
    if lm_steps > 0:
        report = write_tiny_llm(out, lm_steps)
        print(f"tiny caption LLM: {out / TINY_LLM_DIR} ({lm_steps} steps on {report['texts']} prompt+caption "
              f"texts, loss {report['first_loss']:.2f} -> {report['last_loss']:.2f}, {report['seconds']:.1f} s)")
    print(f"synthetic benchmark written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def run(args) -> int:
    return synthesize(args.out, args.seed, args.scale, args.datasets, args.lm_steps)
