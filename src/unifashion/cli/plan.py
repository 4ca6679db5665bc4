"""`unifashion plan`: parameters per submodule and estimated memory per GPU for each ZeRO stage."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="memory plan of a config for N GPUs (DeepSpeed ZeRO estimators)")
    p.add_argument("--config", action="append", required=True, help="a phase config (+ a strategy config)")
    p.add_argument("--gpus", type=int, default=1)


def run(args) -> int:
    from unifashion.planning import plan_main

    return plan_main(args.config, args.gpus)
