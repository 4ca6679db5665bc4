"""The project's own subcommands of `unifashion` (data, eval, caption, generate)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from unifashion.eval.report import format_table, update_metrics_json

TOKENIZER_DIRS = {"qformer": "tokenizers/qformer", "llm": "tokenizers/llm"}
"""Tiny tokenizers trained on the synthetic captions, relative to the synthetic root."""

TINY_LLM_DIR = "pretrained/llm"
"""The tiny caption LLM pretrained on the synthetic captions (models/tiny_language_model.py)."""


def _training_records(root: Path) -> list[dict]:
    """Sidecar records of the synthetic training images (FileNotFoundError when there are none)."""
    records: list[dict] = []
    for sidecar in sorted(root.glob("*/attributes.jsonl")):
        with open(sidecar, encoding="utf-8") as f:
            records.extend(rec for rec in map(json.loads, f) if rec.get("split") in ("train", None))
    if not records:
        raise FileNotFoundError(f"no synthetic sidecar (*/attributes.jsonl) with training captions under {root}")
    return records


def synthetic_captions(root: Path) -> list[str]:
    """Every caption (all three styles) and modifying text of the synthetic training images."""
    texts: list[str] = []
    for rec in _training_records(root):
        texts.extend(rec["captions"].values())
        texts.extend(rec.get("modifying_texts", []) or [])
    return texts


def synthetic_styled_captions(root: Path) -> list[tuple[str, str]]:
    """(style, caption) of every synthetic training image, from the sidecars."""
    return [pair for rec in _training_records(root) for pair in sorted(rec["captions"].items())]


def write_tiny_llm(root: Path, steps: int) -> dict:
    """Pretrains the tiny caption LLM on the synthetic captions into ``root/pretrained/llm``."""
    from unifashion.models.tiny_language_model import (
        TinyLanguageModelConfig,
        pretrain_tiny_language_model,
        pretraining_texts,
    )

    texts = pretraining_texts(synthetic_styled_captions(root))
    return pretrain_tiny_language_model(texts, root / TOKENIZER_DIRS["llm"], root / TINY_LLM_DIR,
                                        TinyLanguageModelConfig(steps=steps))


def prompt_texts() -> list[str]:
    """Every caption prompt the LLM reads (each instruction paraphrase in the paper's template)."""
    from unifashion.models.instructions import INSTRUCTIONS, text_only_prompt

    return [text_only_prompt(text) for options in INSTRUCTIONS.values() for text in options]


def write_tiny_tokenizers(root: Path) -> dict[str, Path]:
    """Trains the tiny Q-Former (WordPiece) and LLM (BPE) tokenizers of the tiny configs.

    The LLM tokenizer also learns the prompt texts, as a real LLM's tokenizer knows English: a
    prompt is then ~20 tokens instead of ~60 byte-level pieces, which shortens every caption
    sequence by about a third.
    """
    from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

    texts = synthetic_captions(root)
    out = {name: root / rel for name, rel in TOKENIZER_DIRS.items()}
    train_wordpiece_tokenizer(texts, out["qformer"], vocab_size=1000)
    train_bpe_tokenizer(texts + prompt_texts(), out["llm"], vocab_size=1000)
    return out


def synth_command(args) -> int:
    from unifashion.data.synthetic.benchmark import write_benchmark

    out = Path(args.out)
    start = time.perf_counter()
    kwargs = {"datasets": tuple(args.datasets)} if args.datasets else {}
    summary = write_benchmark(out, seed=args.seed, scale=args.scale, **kwargs)
    tokenizers = write_tiny_tokenizers(out)
    print(summary)
    for name, path in tokenizers.items():
        print(f"tiny {name} tokenizer: {path}")
    lm_steps = getattr(args, "lm_steps", 100)
    if lm_steps > 0:
        report = write_tiny_llm(out, lm_steps)
        print(f"tiny caption LLM: {out / TINY_LLM_DIR} ({lm_steps} steps on {report['texts']} prompt+caption "
              f"texts, loss {report['first_loss']:.2f} -> {report['last_loss']:.2f}, {report['seconds']:.1f} s)")
    print(f"synthetic benchmark written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def load_module(ckpt: str | Path, device: str | None = None):
    """A UniFashionModule from a Lightning checkpoint (frozen pretrained parts reload from their paths)."""
    from unifashion.module import UniFashionModule

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = UniFashionModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    return model.to(device).eval()


def fashiongen_root(root: str | Path) -> Path:
    """The FashionGen folder of a synthetic root (``root/fashiongen``), or `root` itself."""
    root = Path(root)
    return root / "fashiongen" if (root / "fashiongen").is_dir() else root


def fashiongen_datamodule(root: str | Path, image_size: int, batch_size: int = 128):
    from unifashion.data.fashiongen import FashionGenDataModule

    return FashionGenDataModule(root=str(fashiongen_root(root)), batch_size=batch_size, image_size=image_size)


def run_cmr(model, data_root, *, protocols=("full", "sample100"), rerank_k=0, seed=0, prefix="",
            batch_size=128, num_queries=1000, num_negatives=100) -> dict[str, float]:
    """FashionGen cross-modal retrieval metrics of a module (flat keys, optional prefix)."""
    from unifashion.eval.retrieval import RetrievalEvalConfig
    from unifashion.evaluate import evaluate_cmr

    dm = fashiongen_datamodule(data_root, model.encoder.config.image_size, batch_size)
    split = dm.retrieval_split("validation")
    config = RetrievalEvalConfig(full="full" in protocols, sample100="sample100" in protocols,
                                 block100="block100" in protocols, seed=seed, num_queries=num_queries,
                                 num_negatives=num_negatives)
    metrics = evaluate_cmr(model.encoder, split, config=config, rerank_k=rerank_k, batch_size=batch_size)
    return {prefix + k: v for k, v in metrics.items()}


def eval_command(args) -> int:
    model = load_module(args.ckpt)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.ckpt).resolve().parent
    metrics: dict[str, float] = {}
    tasks = ("cmr", "fic", "fig") if args.task == "all" else (args.task,)
    for task in tasks:
        start = time.perf_counter()
        if task == "cmr":
            metrics |= run_cmr(model, args.data, protocols=args.protocols, rerank_k=args.rerank_k,
                               seed=args.seed, prefix=args.prefix, batch_size=args.batch_size,
                               num_queries=args.num_queries, num_negatives=args.num_negatives)
        elif task == "fic":
            if model.captioner is None:
                print("fic: skipped (this checkpoint has no captioner)")
                continue
            from unifashion.evaluate_tasks import run_fic

            metrics |= run_fic(model, args.data, prefix=args.prefix, max_items=args.max_items)
        elif task == "fig":
            if model.generator is None:
                print("fig: skipped (this checkpoint has no generator)")
                continue
            from unifashion.evaluate_tasks import run_fig

            metrics |= run_fig(model, args.data, run_dir / "generated", prefix=args.prefix,
                               max_items=args.max_items)
        metrics[f"{args.prefix}time/eval_{task}_s"] = time.perf_counter() - start
    update_metrics_json(run_dir / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"metrics written to {run_dir / 'metrics.json'}")
    return 0


def caption_command(args) -> int:
    from unifashion.evaluate_tasks import caption_images

    model = load_module(args.ckpt)
    captions = caption_images(model, images_dir=args.images, data_root=args.data, style=args.style,
                              num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(captions, indent=1, ensure_ascii=False))
    print(f"{len(captions)} captions written to {args.out}")
    return 0


def generate_command(args) -> int:
    from unifashion.evaluate_tasks import generate_images

    model = load_module(args.ckpt)
    n = generate_images(model, args.data, args.out, sampler=args.sampler, steps=args.steps,
                        guidance_scale=args.guidance_scale, seed=args.seed, limit=args.limit)
    print(f"{n} images written under {args.out}")
    return 0
