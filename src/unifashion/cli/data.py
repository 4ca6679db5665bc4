"""`unifashion data synth`: write the synthetic benchmark (official layouts) + its tiny pretrained parts."""

from __future__ import annotations

import argparse


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
    synth.add_argument(
        "--vae-steps", type=int, default=None,
        help="training steps of the tiny VAE written to <out>/pretrained/vae (default: "
             "TinyAutoencoderConfig.steps; 0: do not write it)",
    )


def run(args) -> int:
    return synthesize(args.out, args.seed, args.scale, args.datasets, args.lm_steps, args.vae_steps)

from unifashion.models.tiny_assets import synthesize  # noqa: E402,F401 (re-exported for scripts)
