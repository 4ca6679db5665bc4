"""The captioning stage of `make demo`: phase1_captioning on the synthetic FashionGen pairs.

Starting from the tiny retrieval checkpoint (its Q-Former is frozen in this phase) and the tiny
caption LLM that `unifashion data synth` pretrained on text only, the stage evaluates the
untrained captioner (keys prefixed ``baseline/``: TSA untrained, LoRA at its zero start, so the
LLM writes captions without looking at the image), trains the text TSA + LoRA with the ITG loss
(eq. 6) on lightning_configs/tiny/phase1_captioning.yaml, evaluates again
(``fic/fashiongen/BLEU-4`` ... ``CIDEr``, DATASETS.md 6.2, and ``fic/fashiongen/attributes/*``: the
share of captions naming the right colour, pattern, sleeve and garment), and prints a few captions
beside their references. The same configuration runs with ``unifashion fit --config ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unifashion.api import UniFashion
from unifashion.models.tiny_assets import TINY_LLM_DIR
from unifashion.tasks.fic.attributes import ATTRIBUTES
from unifashion.tasks.fic.protocol import METRICS

CONFIG_NAME = "phase1_captioning.yaml"
EVAL_ITEMS = 200
"""Validation products captioned by the demo's evaluations (one caption per product, same set twice)."""

MAX_NEW_TOKENS = 40
"""Longest generated caption (the synthetic descriptions are at most 38 tiny-BPE tokens + </s>)."""

BASELINE_METRICS = tuple(m for m in METRICS if m != "METEOR")
"""The untrained captioner's metrics: METEOR's Java start (~10-30 s) is kept for the trained one only."""

NUM_EXAMPLES = 3


def print_examples(examples: list[tuple[str, str]], n: int = NUM_EXAMPLES) -> None:
    """Prints `n` (prediction, reference) pairs one above the other."""
    for i, (pred, ref) in enumerate(examples[:n]):
        print(f"  [{i}] generated: {pred}\n      reference: {ref}")


def captioning_stage(
    data: Path,
    run_dir: Path,
    retrieval_ckpt: Path,
    timer: Any,
    build_cli: Callable[..., Any],
    config: Callable[[str], Path],
    eval_items: int = EVAL_ITEMS,
    extra: list[str] | None = None,
) -> dict[str, float]:
    """Runs the captioning stage and returns its metrics (stage times go to ``timer``).

    Args:
        data: the synthetic benchmark root (fashiongen/, tokenizers/).
        run_dir: the demo's run directory; the stage writes to ``run_dir/captioning``.
        retrieval_ckpt: the phase1_retrieval checkpoint whose encoder the captioner reads.
        timer: ``demo.Timer`` (``timer.run(stage, fn)`` times ``fn``).
        build_cli: ``demo.build_cli`` (LightningCLI on a config, not run).
        config: ``demo._config`` (tiny config name -> path).
        eval_items: validation products captioned by each evaluation.
        extra: further LightningCLI arguments (e.g. ``--trainer.max_steps 10``).

    Returns:
        ``baseline/fic/fashiongen/<metric>`` (untrained) and ``fic/fashiongen/<metric>`` (trained).

    Raises:
        FileNotFoundError: the retrieval checkpoint or the tiny pretrained LLM is missing.
    """
    from unifashion.tasks.fic.evaluate import run_fic

    retrieval_ckpt, data = Path(retrieval_ckpt), Path(data)
    if not retrieval_ckpt.is_file():
        raise FileNotFoundError(f"retrieval checkpoint not found: {retrieval_ckpt}; run the retrieval stage first")
    llm = data / TINY_LLM_DIR
    if not (llm / "config.json").is_file():
        raise FileNotFoundError(f"tiny pretrained caption LLM not found: {llm} (run `unifashion data synth`)")
    stage_dir = Path(run_dir) / "captioning"
    args = ["--data.init_args.root", str(data / "fashiongen"), "--model.init_from", str(retrieval_ckpt),
            "--model.captioner.llm", str(llm), *(extra or [])]
    cli = build_cli(config(CONFIG_NAME), stage_dir, data, args)
    model = UniFashion(cli.model)

    metrics: dict[str, float] = {}
    baseline: list[tuple[str, str]] = []
    metrics |= timer.run("eval_baseline_fic", lambda: run_fic(
        model, data, prefix="baseline/", max_items=eval_items, max_new_tokens=MAX_NEW_TOKENS,
        metrics=BASELINE_METRICS, examples=baseline))
    print("untrained captioner:")
    print_examples(baseline, 1)
    timer.run("train_captioning", lambda: cli.trainer.fit(cli.model, cli.datamodule))
    examples: list[tuple[str, str]] = []
    metrics |= timer.run("eval_fic", lambda: run_fic(
        model, data, max_items=eval_items, max_new_tokens=MAX_NEW_TOKENS, examples=examples))
    print("trained captioner:")
    print_examples(examples)
    (stage_dir / "examples.json").write_text(json.dumps(
        [{"generated": p, "reference": r} for p, r in examples], indent=1, ensure_ascii=False))
    for key in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", *(f"attributes/{a}" for a in ATTRIBUTES)):
        name = f"fic/fashiongen/{key}"
        if name in metrics:
            print(f"  {name}: {metrics.get('baseline/' + name, float('nan')):.1f} -> {metrics[name]:.1f}")
    return metrics
