"""The composed stage of `make demo`: phase 2 (eqs. 9-12) on the synthetic Fashion-IQ triplets.

1. Merges the demo's phase-1 checkpoints (captioning: encoder + text TSA + LoRA; image generation:
   encoder + image TSA + UNet) into ``<run dir>/phase1.ckpt`` (`merge_phase1_checkpoints`).
2. The demo's own captioner writes the Fashion-IQ-cap files (style fashioniq, each image alone, no
   query text): the targets of the train triplets (phase 2's Z_C and ITG answers) and every
   validation gallery image (the caption term of the score) -> ``<run dir>/composed/captions/``.
   The synthetic ground-truth captions are never read.
3. Evaluates the phase-1 model (``baseline/`` keys: the fusion untrained for composition), trains
   lightning_configs/tiny/phase2.yaml, evaluates again: the three rows (full / w/o cap / w/o img)
   per category and average, beside an image-only baseline (the reference image's own features)
   and a text-only baseline (the modifying text alone) of the trained model; and, as the second
   benchmark, Fashion200K's TIRG protocol zero-shot (trained on Fashion-IQ only), its test gallery
   captioned by the same captioner from each image alone.
4. Composed outputs from Z_R of the validation queries, checked against the sidecar attributes:
   the share of composed captions naming the target's changed attribute values and the share of
   composed images of the target's primary colour, beside the untrained model and the
   reference-only baseline (caption / image of the reference's own queries) and the target-only
   ceiling (caption / image of the target's own queries).

`ablation` runs phase 2 three times (CIR terms only; + ITG; + ITG + denoising) and returns each
CIR average (the shape of Table 5); `make ablation` calls it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CONFIG_NAME = "phase2.yaml"
CATEGORIES = ("dress", "shirt", "toptee")
ROWS = ("cir", "cir_nocap", "cir_noimg")
ROW_NAMES = {"cir": "full", "cir_nocap": "w/o cap", "cir_noimg": "w/o img"}
ABLATION = {
    "cir only": {"itg": 0.0, "denoise": 0.0},
    "+ ITG": {"itg": 1.0, "denoise": 0.0},
    "+ ITG + denoise": {"itg": 1.0, "denoise": 1.0},
}
"""Table 5's rows: loss weights over the CIR terms (which stay 1)."""
OUTPUT_ITEMS = 48
"""Validation queries whose composed caption and image are checked (both need generation)."""


# ---------------------------------------------------------------------- checkpoints
def merge_phase1_checkpoints(paths: Sequence[Path], out: Path) -> Path:
    """One checkpoint with the union of the state dicts and chain records of `paths` (later files win
    on shared keys: the encoder, frozen in both generative phases, is the same in each)."""
    from unifashion.module import CHAIN_KEY

    merged: dict[str, Any] = {}
    state: dict[str, torch.Tensor] = {}
    trained: set[str] = set()
    phases: list[str] = []
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        merged = merged or ckpt
        state.update(ckpt["state_dict"])
        record = ckpt.get(CHAIN_KEY) or {}
        trained |= set(record.get("trained", ()))
        phases += [p for p in record.get("phases", ()) if p not in phases]
    merged = dict(merged)
    merged["state_dict"] = state
    merged[CHAIN_KEY] = {"trained": sorted(trained), "phases": phases}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merged, out)
    return out


# ---------------------------------------------------------------------- attribute checks
def _sidecar(data: Path) -> dict[str, dict[str, str | None]]:
    path = Path(data) / "fashioniq" / "fashionIQ_dataset" / "attributes.jsonl"
    out: dict[str, dict[str, str | None]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            out[rec["asin"]] = rec["garment"]
    return out


def _phrases(attribute: str, value: str) -> tuple[str, ...]:
    """The ways a caption names an attribute value (any one counts); the renderer's caption styles say
    "sleeveless" or "no sleeves", "long sleeve(s)", "loose fit", and the value itself otherwise."""
    value = value.replace("-", " ").lower()
    if attribute == "sleeve_length":
        return ("sleeveless", "no sleeves") if value == "sleeveless" else (f"{value} sleeve",)
    return (f"{value} fit",) if attribute == "fit" else (value,)


def names_changed_attributes(caption: str, reference: dict, target: dict) -> bool:
    """The caption names the target's value of every visual attribute that changed."""
    from unifashion.data.synthetic.attributes import VISUAL_ATTRIBUTES

    text = caption.replace("-", " ").lower()
    changed = [a for a in VISUAL_ATTRIBUTES if reference.get(a) != target.get(a) and target.get(a)]
    return bool(changed) and all(any(p in text for p in _phrases(a, str(target[a]))) for a in changed)


def composed_outputs(model, data: Path, n: int = OUTPUT_ITEMS, generate: bool = True,
                     controls: bool = True) -> dict[str, float]:
    """Shares (percent) of validation queries whose composed caption / image match the target.

    Keys ``cir_outputs/caption_names_change`` and ``cir_outputs/image_colour`` (composed, from
    Z_R), ``cir_outputs/reference_only/...`` (the reference's own queries, no text: the floor) and
    ``cir_outputs/target_only/...`` (the target image's own queries: the ceiling of the captioner and
    generator, which a perfect Z_R would reach); `controls=False` computes the composed keys only.
    """
    from unifashion.data.fashioniq import FashionIQDataModule, eval_text
    from unifashion.data.files import load_image
    from unifashion.tasks.fig.evaluate import colour_accuracy_of

    attrs = _sidecar(data)
    dm = FashionIQDataModule(root=str(Path(data) / "fashioniq"), image_size=model.encoder.config.image_size)
    triplets = [t for cat in CATEGORIES for t in dm.triplets(cat, "val")][:n]
    pixels = torch.stack([dm.eval_transform(load_image(dm.images.path(t.candidate))) for t in triplets])
    texts = [eval_text(t.captions) for t in triplets]
    rows = [("", model.composed_queries(pixels, texts))]  # Z_R (n, Q, H)
    if controls:
        targets = torch.stack([dm.eval_transform(load_image(dm.images.path(t.target))) for t in triplets])
        rows += [("reference_only/", model.image_queries(pixels)),  # (n, Q, H): the reference's own queries
                 ("target_only/", model.image_queries(targets))]  # the ceiling, the target's own queries
    out: dict[str, float] = {}
    for name, z in rows:
        caps = model.caption(queries=z, style="fashioniq", max_new_tokens=48)
        hits = [names_changed_attributes(c, attrs[t.candidate], attrs[t.target]) for c, t in zip(caps, triplets)]
        out[f"cir_outputs/{name}caption_names_change"] = 100.0 * sum(hits) / len(hits)
        if generate and model.generator is not None:
            images = model.generate_tensors(queries=z, steps=10, seed=0)
            colours = [str(attrs[t.target]["primary_colour"]) for t in triplets]
            out[f"cir_outputs/{name}image_colour"] = colour_accuracy_of(images, colours, "composed")
    return out


# ---------------------------------------------------------------------- stage
def print_cir_table(metrics: dict[str, float]) -> None:
    """Per category and average: the three rows, the untrained model and the two baselines."""
    cols = [("trained", ""), ("untrained", "baseline/"), ("image only", "image_only/"), ("text only", "text_only/")]
    print(f"{'Fashion-IQ val (synthetic)':34s}" + "".join(f"{c:>14s}" for c, _ in cols))
    for row in ROWS:
        for cat in (*CATEGORIES, "mean"):
            for k in ("R@10", "R@50") + (("avg",) if cat == "mean" else ()):
                key = f"{row}/fashioniq/{cat}/{k}"
                vals = [metrics.get(p + key) for _, p in cols]
                print(f"{ROW_NAMES[row] + ' ' + cat + ' ' + k:34s}"
                      + "".join(f"{v:14.1f}" if v is not None else f"{'-':>14s}" for v in vals))


def print_fashion200k_table(metrics: dict[str, float]) -> None:
    """Fashion200K (TIRG protocol, zero-shot from the Fashion-IQ phase 2): three rows, trained vs untrained."""
    print(f"{'Fashion200K test (synthetic, zero-shot)':40s}{'trained':>10s}{'untrained':>11s}")
    for row in ROWS:
        for k in ("R@1", "R@10", "R@50"):
            key = f"{row}/fashion200k/{k}"
            if key in metrics:
                base = metrics.get(f"baseline/{key}")
                print(f"{ROW_NAMES[row] + ' ' + k:40s}{metrics[key]:10.1f}"
                      + (f"{base:11.1f}" if base is not None else f"{'-':>11s}"))


def write_gallery_captions(data: Path, run_dir: Path, captioning_ckpt: Path, timer: Any) -> Path:
    """Step 2 of the stage: the Fashion-IQ-cap files (style fashioniq) of the train targets and of every
    validation gallery image, and the Fashion200K test gallery's captions (style fashion200k), each
    written by the phase-1 captioner of `captioning_ckpt` from the image alone (no query text), into
    ``run_dir/composed/captions``, which it returns."""
    from unifashion.api import UniFashion
    from unifashion.tasks.cir.captions import write_fashion200k_captions, write_fashioniq_captions

    data, caption_dir = Path(data), Path(run_dir) / "composed" / "captions"
    captioner = UniFashion.from_checkpoint(captioning_ckpt, device="cpu", show_progress=False)
    timer.run("caption_fashioniq", lambda: write_fashioniq_captions(
        captioner, data / "fashioniq", caption_dir, splits=("train", "val"), max_new_tokens=48))
    f200k = data / "fashion200k"
    if (f200k / "test_queries.txt").is_file():  # the second benchmark's gallery, each image alone
        timer.run("caption_fashion200k", lambda: write_fashion200k_captions(captioner, f200k, caption_dir))
    return caption_dir


def composed_stage(
    data: Path,
    run_dir: Path,
    phase1_ckpts: Sequence[Path],
    timer: Any,
    build_cli: Callable[..., Any],
    config: Callable[[str], Path],
    extra: list[str] | None = None,
    outputs: bool = True,
    captions_written: bool = False,
) -> dict[str, float]:
    """Runs the composed stage (module docstring) and returns its metrics.

    Args:
        data: the synthetic benchmark root (fashioniq/, tokenizers/, pretrained/).
        run_dir: the demo's run directory; the stage writes to ``run_dir/composed``.
        phase1_ckpts: the phase-1 checkpoints to start from: the captioning one (its captioner
            writes the captions) and the image-generation one (``runs/demo/captioning/...``,
            ``runs/demo/generation/...``); merged into ``run_dir/phase1.ckpt``.
        timer: ``demo.Timer``; build_cli: ``demo.build_cli``; config: ``demo._config``.
        extra: further LightningCLI arguments (e.g. ``--trainer.max_steps 10``).
        outputs: also check the composed captions and images (generation; slower).
        captions_written: the gallery captions of this run are already in ``run_dir/composed/captions``
            (`write_gallery_captions`, which the demo runs right after the captioning stage).
    """
    from unifashion.api import UniFashion
    from unifashion.tasks.cir.evaluate import run_cir, run_cir_fashion200k

    data, run_dir = Path(data), Path(run_dir)
    for p in phase1_ckpts:
        if not Path(p).is_file():
            raise FileNotFoundError(f"composed stage: phase-1 checkpoint {p} not found; run the earlier stages first")
    stage_dir = run_dir / "composed"
    caption_dir = stage_dir / "captions"
    merged = merge_phase1_checkpoints([Path(p) for p in phase1_ckpts], run_dir / "phase1.ckpt")
    if not captions_written:
        write_gallery_captions(data, run_dir, Path(phase1_ckpts[0]), timer)
    f200k = data / "fashion200k"
    pattern = str(caption_dir / "next_llava.{split}.{cat}.caption.json")
    args = ["--data.init_args.root", str(data / "fashioniq"), "--data.init_args.target_captions", pattern,
            "--model.init_from", str(merged), "--model.captioner.llm", str(data / "pretrained" / "llm"),
            "--model.generator.vae", str(data / "pretrained" / "vae"), *(extra or [])]
    cli = build_cli(config(CONFIG_NAME), stage_dir, data, args)
    model = UniFashion(cli.model, show_progress=False)
    metrics: dict[str, float] = {}
    metrics |= timer.run("eval_baseline_cir", lambda: run_cir(model, data / "fashioniq", caption_dir,
                                                              prefix="baseline/"))
    if (f200k / "test_queries.txt").is_file():
        metrics |= timer.run("eval_baseline_cir_fashion200k", lambda: run_cir_fashion200k(
            model, f200k, caption_dir, prefix="baseline/"))
    if outputs:
        metrics |= timer.run("eval_baseline_cir_outputs",
                             lambda: {f"baseline/{k}": v for k, v in composed_outputs(model, data, controls=False).items()})
    timer.run("train_composed", lambda: cli.trainer.fit(cli.model, cli.datamodule))
    cli.model.eval()
    metrics |= timer.run("eval_cir", lambda: run_cir(model, data / "fashioniq", caption_dir,
                                                     modes=("composed", "image", "text")))
    if (f200k / "test_queries.txt").is_file():
        metrics |= timer.run("eval_cir_fashion200k", lambda: run_cir_fashion200k(model, f200k, caption_dir))
    if outputs:
        metrics |= timer.run("eval_cir_outputs", lambda: composed_outputs(model, data))
    print_cir_table(metrics)
    print_fashion200k_table(metrics)
    for key in ("caption_names_change", "image_colour"):
        vals = [metrics.get(f"{p}cir_outputs/{s}{key}")
                for p, s in (("", ""), ("baseline/", ""), ("", "reference_only/"), ("", "target_only/"))]
        if vals[0] is not None:
            print(f"  composed {key}: trained {vals[0]:.1f} / untrained {vals[1]:.1f} / reference only "
                  f"{vals[2]:.1f} / target only (ceiling) {vals[3]:.1f}")
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def ablation(
    data: Path,
    run_dir: Path,
    timer: Any,
    build_cli: Callable[..., Any],
    config: Callable[[str], Path],
    extra: list[str] | None = None,
) -> dict[str, float]:
    """Table 5's shape on the synthetic benchmark: phase 2 with the CIR terms only, + ITG, + ITG +
    denoising, from the same phase-1 checkpoint and captions as `composed_stage` (run it first).

    Returns:
        ``ablation/<row>/cir/fashioniq/mean/avg`` (and R@10 / R@50) per row.
    """
    from unifashion.api import UniFashion
    from unifashion.tasks.cir.evaluate import run_cir

    run_dir = Path(run_dir)
    merged, caption_dir = run_dir / "phase1.ckpt", run_dir / "composed" / "captions"
    if not merged.is_file() or not caption_dir.is_dir():
        raise FileNotFoundError(f"ablation needs {merged} and {caption_dir}: run the demo's composed stage first")
    pattern = str(caption_dir / "next_llava.{split}.{cat}.caption.json")
    out: dict[str, float] = {}
    for name, weights in ABLATION.items():
        tag = name.replace(" ", "").replace("+", "_")
        args = ["--data.init_args.root", str(Path(data) / "fashioniq"), "--data.init_args.target_captions", pattern,
                "--model.init_from", str(merged), "--model.captioner.llm", str(Path(data) / "pretrained" / "llm"),
                "--model.generator.vae", str(Path(data) / "pretrained" / "vae"),
                *[a for k, v in weights.items() for a in (f"--model.loss_weights.{k}", str(v))], *(extra or [])]
        cli = build_cli(config(CONFIG_NAME), run_dir / "ablation" / tag, Path(data), args)
        timer.run(f"ablation_{tag}", lambda cli=cli: cli.trainer.fit(cli.model, cli.datamodule))
        cli.model.eval()
        m = run_cir(UniFashion(cli.model, show_progress=False), Path(data) / "fashioniq", caption_dir)
        for k in ("R@10", "R@50", "avg"):
            out[f"ablation/{name}/cir/fashioniq/mean/{k}"] = m[f"cir/fashioniq/mean/{k}"]
    print(f"{'Table 5 shape (synthetic)':22s}{'R@10':>8s}{'R@50':>8s}{'avg':>8s}")
    for name in ABLATION:
        print(f"{name:22s}" + "".join(f"{out[f'ablation/{name}/cir/fashioniq/mean/{k}']:8.1f}" for k in ("R@10", "R@50", "avg")))
    return out
