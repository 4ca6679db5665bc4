"""`unifashion demo`: the main job on the synthetic benchmark (unifashion.demo.pipeline)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    from unifashion.demo.pipeline import ALL_STAGES, STAGES

    demo = sub.add_parser(name, help="the main job on the synthetic benchmark")
    demo.add_argument("--data", default="data/synthetic")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--scale", choices=("tiny", "small", "medium"), default="small")
    demo.add_argument("--stages", nargs="+", default=None, help=f"stages to run (default: {' '.join(STAGES)}; all: {' '.join(ALL_STAGES)})")
    demo.add_argument("--sequential", action="store_true",
                      help="run every stage in this process, one after the other (default: independent stages "
                           "side by side, one thread each)")


def run(args) -> int:
    from unifashion.demo.pipeline import run_demo

    return run_demo(args)
