"""The `unifashion` command (also installed as `lightning`).

    unifashion fit|validate|test|predict --config lightning_configs/....yaml   (LightningCLI)
    unifashion data synth --out data/synthetic --seed 0 --scale small
    unifashion eval cmr|fic|fig|all --ckpt CKPT --data DATA_ROOT [--run-dir DIR]
    unifashion caption --ckpt CKPT (--images DIR | --data ROOT) --style fashiongen --out captions.json
    unifashion generate --ckpt CKPT --data ROOT --sampler dpmsolver++ --steps 20 --out DIR
    unifashion demo --data data/synthetic --run-dir runs/demo
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def lightning_main(args: Sequence[str] | None = None, run: bool = True):
    """Runs LightningCLI on UniFashionModule and any LightningDataModule (class_path in config)."""
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    from unifashion.module import UniFashionModule

    return LightningCLI(
        UniFashionModule,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )


def _data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: write the synthetic benchmark")
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


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a checkpoint with the paper's protocols")
    ev.add_argument("task", choices=("cmr", "fic", "fig", "all"))
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--data", required=True, help="synthetic root (with fashiongen/ ...) or a dataset root")
    ev.add_argument("--run-dir", default=None, help="where metrics.json goes (default: the checkpoint's folder)")
    ev.add_argument("--protocols", nargs="+", default=["full", "sample100"])
    ev.add_argument("--num-queries", type=int, default=1000, help="sample100: queries per direction and repeat")
    ev.add_argument("--num-negatives", type=int, default=100, help="sample100: same-sub-category negatives")
    ev.add_argument("--rerank-k", type=int, default=0, help="ITM re-ranking of the ITC top-k (0: off)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--max-items", type=int, default=None, help="cap on evaluated items (quick looks)")
    ev.add_argument("--prefix", default="", help="prefix for the metric keys (e.g. baseline/)")


def _caption_parser(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("caption", help="caption an image folder or a dataset split")
    cap.add_argument("--ckpt", required=True)
    src = cap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images")
    src.add_argument("--data", help="a FashionGen root (captions its validation images)")
    cap.add_argument("--style", choices=("fashiongen", "fashion200k", "fashioniq"), default="fashiongen")
    cap.add_argument("--out", required=True, help="captions.json")
    cap.add_argument("--num-beams", type=int, default=1)
    cap.add_argument("--max-new-tokens", type=int, default=40)
    cap.add_argument("--batch-size", type=int, default=32)


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="generate images from a dataset's conditions")
    gen.add_argument("--ckpt", required=True)
    gen.add_argument("--data", required=True)
    gen.add_argument("--sampler", choices=("pndm", "dpmsolver++", "ddim"), default="dpmsolver++")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--guidance-scale", type=float, default=3.0)
    gen.add_argument("--seed", type=int, default=1234)
    gen.add_argument("--limit", type=int, default=None)
    gen.add_argument("--out", required=True)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job on the synthetic benchmark")
    demo.add_argument("--data", default="data/synthetic")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--scale", choices=("tiny", "small", "medium"), default="small")
    demo.add_argument("--stages", nargs="+", default=None, help="subset of stages to run")


def own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifashion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for add in (_data_parser, _eval_parser, _caption_parser, _generate_parser, _demo_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help"):
        own_parser().print_help()
        print("\nLightning subcommands: " + ", ".join(LIGHTNING_SUBCOMMANDS) + " (unifashion fit --help)")
        return 0
    if argv[0] in LIGHTNING_SUBCOMMANDS:
        lightning_main(argv)
        return 0
    args = own_parser().parse_args(argv)
    if args.cmd == "data":
        from unifashion.commands import synth_command

        return synth_command(args)
    if args.cmd == "eval":
        from unifashion.commands import eval_command

        return eval_command(args)
    if args.cmd == "caption":
        from unifashion.commands import caption_command

        return caption_command(args)
    if args.cmd == "generate":
        from unifashion.commands import generate_command

        return generate_command(args)
    if args.cmd == "demo":
        from unifashion.demo import run_demo

        return run_demo(args)
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
