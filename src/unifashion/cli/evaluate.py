"""`unifashion eval cmr|cir|fic|fig|all`: the paper's protocols on a checkpoint; tables beside the
paper's numbers; flat keys into `<run dir>/metrics.json`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

TASKS = ("cmr", "cir", "fic", "fig")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    ev = sub.add_parser(name, help="evaluate a checkpoint with the paper's protocols")
    ev.add_argument("task", choices=(*TASKS, "all"))
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--data", required=True, help="synthetic root (with fashiongen/ ...) or a dataset root")
    ev.add_argument("--run-dir", default=None, help="where metrics.json (and the gallery captions it writes) go; default: "
                    "eval_<checkpoint name>/ beside the checkpoint, so a run's own metrics.json is never overwritten")
    ev.add_argument("--protocols", nargs="+", default=["full", "sample100"])
    ev.add_argument("--num-queries", type=int, default=1000, help="sample100: queries per direction and repeat")
    ev.add_argument("--num-negatives", type=int, default=100, help="sample100: same-sub-category negatives")
    ev.add_argument("--rerank-k", type=int, default=0, help="ITM re-ranking of the ITC top-k (0: off)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--max-items", type=int, default=None, help="cap on evaluated items (quick looks)")
    ev.add_argument("--caption-weight", type=float, default=1.0, help="cir: weight w of the caption term")
    ev.add_argument("--captions", default=None,
                    help="cir: folder of next_llava.{split}.{cat}.caption.json gallery captions (default: the "
                         "checkpoint's own captioner writes them from each gallery image alone)")
    ev.add_argument("--fashion200k-captions", default=None,
                    help="cir: fashion200k_captions.test.json (or its folder) of Fashion200K gallery captions "
                         "(default: the checkpoint's captioner writes them)")
    ev.add_argument("--prefix", default="", help="prefix for the metric keys (e.g. baseline/)")


def evaluate(model, task: str, args, run_dir: Path) -> dict[str, float] | None:
    """Metrics of one task, or None when the checkpoint cannot do it (said on stdout)."""
    if task == "cmr":
        from unifashion.tasks.cmr.evaluate import run_cmr

        return run_cmr(model, args.data, protocols=args.protocols, rerank_k=args.rerank_k, seed=args.seed,
                       prefix=args.prefix, batch_size=args.batch_size, num_queries=args.num_queries,
                       num_negatives=args.num_negatives)
    if task == "cir":
        from unifashion.data.roots import dataset_root
        from unifashion.tasks.cir.evaluate import run_cir, run_cir_fashion200k

        fiq, f200k = dataset_root(args.data, "fashioniq"), dataset_root(args.data, "fashion200k")
        has_f200k = (f200k / "test_queries.txt").is_file()
        out: dict[str, float] = {}
        if not (has_f200k and fiq == f200k):  # not a Fashion200K root alone
            captions = args.captions
            if captions is None and model.capabilities.caption:
                from unifashion.tasks.cir.captions import write_fashioniq_captions

                captions = run_dir / "fashioniq_captions"
                write_fashioniq_captions(model, fiq, captions, splits=("val",))  # gallery images alone
            elif captions is None:
                print("cir: no gallery captions (no captioner, no --captions): only the image term is scored")
            out |= run_cir(model, fiq, captions, prefix=args.prefix, caption_weight=args.caption_weight,
                           batch_size=args.batch_size)
        if has_f200k:  # TIRG protocol, the gallery captioned by the model from each image alone
            f200k_caps = args.fashion200k_captions
            if f200k_caps is None and model.capabilities.caption:
                from unifashion.tasks.cir.captions import write_fashion200k_captions

                f200k_caps = write_fashion200k_captions(model, f200k, run_dir / "fashion200k_captions")
            out |= run_cir_fashion200k(model, f200k, f200k_caps, prefix=args.prefix,
                                       caption_weight=args.caption_weight, batch_size=args.batch_size)
        return out
    if task == "fic":
        if not model.capabilities.caption:
            print("fic: skipped (this checkpoint has no captioner)")
            return None
        from unifashion.tasks.fic.evaluate import run_fic

        return run_fic(model, args.data, prefix=args.prefix, max_items=args.max_items)
    if task == "fig":
        if not model.capabilities.generate:
            print("fig: skipped (this checkpoint has no generator)")
            return None
        from unifashion.tasks.fig.evaluate import run_fig

        return run_fig(model, args.data, run_dir / "generated", prefix=args.prefix, max_items=args.max_items)
    raise ValueError(f"unknown task {task!r}")


def run(args) -> int:
    from unifashion.api import UniFashion
    from unifashion.tasks.report import PAPER_NUMBERS, format_table, update_metrics_json

    model = UniFashion.from_checkpoint(args.ckpt)
    print(f"checkpoint {args.ckpt}: {model.capabilities}")
    ckpt = Path(args.ckpt).resolve()
    run_dir = Path(args.run_dir) if args.run_dir else ckpt.parent / f"eval_{ckpt.stem}"
    metrics: dict[str, float] = {}
    for task in TASKS if args.task == "all" else (args.task,):
        start = time.perf_counter()
        result = evaluate(model, task, args, run_dir)
        if result is None:
            continue
        metrics |= result
        metrics[f"{args.prefix}time/eval_{task}_s"] = time.perf_counter() - start
    update_metrics_json(run_dir / "metrics.json", metrics)
    print(format_table(metrics, paper=PAPER_NUMBERS))
    print(f"metrics written to {run_dir / 'metrics.json'}")
    return 0
