"""The `unifashion` command (also installed as `lightning`; `python -m unifashion` is the same).

    unifashion fit|validate|test|predict --config lightning_configs/....yaml   (LightningCLI)
    unifashion data synth --out data/synthetic --seed 0 --scale small
    unifashion eval cmr|cir|fic|fig|all --ckpt CKPT --data DATA_ROOT [--run-dir DIR]
    unifashion caption --ckpt CKPT (--images DIR | --data ROOT) --style fashiongen --out captions.json
    unifashion generate --ckpt CKPT (--data ROOT | --image IMG | --text TEXT) --out DIR
    unifashion compose --ckpt CKPT --image REF --text "is red with long sleeves" [-k 10] [--caption] [--generate --out DIR]
    unifashion index build --ckpt CKPT --images DIR --out INDEX_DIR ; unifashion search --index INDEX_DIR --text ...
    unifashion plan --config CONFIG [--config deepspeed/zero3.yaml] --gpus N
    unifashion demo --data data/synthetic --run-dir runs/demo

One module per verb in this package; each has `add_parser(subparsers)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from unifashion.cli import caption, compose, data, demo, evaluate, fit, generate, index, plan, search

LIGHTNING_SUBCOMMANDS = fit.SUBCOMMANDS
VERBS = {"data": data, "eval": evaluate, "caption": caption, "generate": generate, "compose": compose,
         "index": index, "search": search, "plan": plan, "demo": demo}


def own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifashion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=os.environ.get("UNIFASHION_LOG", "INFO"),
                        help="logging level (counted skips and loading reports are logged at INFO/WARNING)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, verb in VERBS.items():
        verb.add_parser(sub, name)
    return parser


def configure_logging(level: str = "INFO") -> None:
    """One logging set-up for every verb: `unifashion.*` messages to stderr."""
    logger = logging.getLogger("unifashion")  # not the root logger: Lightning keeps its own handler
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help"):
        own_parser().print_help()
        print("\nLightning subcommands: " + ", ".join(LIGHTNING_SUBCOMMANDS) + " (unifashion fit --help)")
        return 0
    if argv[0] in LIGHTNING_SUBCOMMANDS:
        configure_logging(os.environ.get("UNIFASHION_LOG", "INFO"))
        fit.lightning_main(argv)
        return 0
    args = own_parser().parse_args(argv)
    configure_logging(args.log_level)
    return int(VERBS[args.cmd].run(args) or 0)
