"""The tiny pretrained parts of the CPU configurations, built from the synthetic benchmark.

A real run loads its tokenizers and LLM from hub ids or directories; the tiny configurations load
theirs from directories that `unifashion data synth` writes under the synthetic root, through the
very same `from_pretrained` calls:

  tokenizers/qformer   WordPiece tokenizer of the tiny Q-Former
  tokenizers/llm       BPE tokenizer of the tiny caption LLM (also knows the prompt texts)
  pretrained/llm       tiny Llama pretrained on the synthetic captions, text only
  pretrained/vae       tiny AutoencoderKL trained on the synthetic FashionGen training images
                       (models/tiny_autoencoder.py), loaded like SD's VAE
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TOKENIZER_DIRS = {"qformer": "tokenizers/qformer", "llm": "tokenizers/llm"}
"""Tiny tokenizers trained on the synthetic captions, relative to the synthetic root."""

TINY_LLM_DIR = "pretrained/llm"
"""The tiny caption LLM pretrained on the synthetic captions (models/tiny_language_model.py)."""


def _training_records(root: Path) -> list[dict]:
    """Sidecar records of the synthetic training images (FileNotFoundError when there are none)."""
    records: list[dict] = []
    for sidecar in sorted(Path(root).glob("*/attributes.jsonl")):
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

    root = Path(root)
    texts = synthetic_captions(root)
    out = {name: root / rel for name, rel in TOKENIZER_DIRS.items()}
    train_wordpiece_tokenizer(texts, out["qformer"], vocab_size=1000)
    train_bpe_tokenizer(texts + prompt_texts(), out["llm"], vocab_size=1000)
    return out


def write_tiny_llm(root: Path, steps: int) -> dict:
    """Pretrains the tiny caption LLM on the synthetic captions into ``root/pretrained/llm``."""
    from unifashion.models.tiny_language_model import (
        TinyLanguageModelConfig,
        pretrain_tiny_language_model,
        pretraining_texts,
    )

    root = Path(root)
    texts = pretraining_texts(synthetic_styled_captions(root))
    return pretrain_tiny_language_model(texts, root / TOKENIZER_DIRS["llm"], root / TINY_LLM_DIR,
                                        TinyLanguageModelConfig(steps=steps))


def write_vae(root: Path, steps: int | None = None) -> dict:
    """Trains the tiny VAE on the synthetic FashionGen training images into ``root/pretrained/vae``."""
    from unifashion.models.tiny_autoencoder import TINY_VAE_DIR, write_tiny_vae

    report = write_tiny_vae(root, steps)
    print(f"tiny VAE: {Path(root) / TINY_VAE_DIR} ({report['steps']} steps on {report['images']} images, "
          f"hold-out PSNR {report['holdout_psnr_untrained_db']:.1f} -> {report['holdout_psnr_db']:.1f} dB, "
          f"{report['seconds']:.1f} s)")
    return report


def synthesize(out: str | Path, seed: int = 0, scale: str = "small", datasets=None, lm_steps: int = 100,
               vae_steps: int | None = None) -> int:
    """Writes the benchmark, the tiny tokenizers, (lm_steps > 0) the tiny pretrained caption LLM and
    (vae_steps != 0, FashionGen written) the tiny VAE; vae_steps None: `TinyAutoencoderConfig.steps`."""
    from unifashion.data.synthetic.benchmark import write_benchmark

    out = Path(out)
    start = time.perf_counter()
    kwargs = {"datasets": tuple(datasets)} if datasets else {}
    summary = write_benchmark(out, seed=seed, scale=scale, **kwargs)
    tokenizers = write_tiny_tokenizers(out)
    print(summary)
    for name, path in tokenizers.items():
        print(f"tiny {name} tokenizer: {path}")
    pretrain_tiny_parts(out, lm_steps, vae_steps)
    print(f"synthetic benchmark written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def pretrain_tiny_parts(out: str | Path, lm_steps: int = 100, vae_steps: int | None = None) -> None:
    """The parts that stand in for downloaded weights, on a written benchmark with its tokenizers:
    (lm_steps > 0) the tiny caption LLM and (vae_steps != 0, FashionGen written) the tiny VAE;
    vae_steps None: `TinyAutoencoderConfig.steps`. The demo runs this beside its retrieval stage."""
    out = Path(out)
    if lm_steps > 0:
        report = write_tiny_llm(out, lm_steps)
        print(f"tiny caption LLM: {out / TINY_LLM_DIR} ({lm_steps} steps on {report['texts']} prompt+caption "
              f"texts, loss {report['first_loss']:.2f} -> {report['last_loss']:.2f}, {report['seconds']:.1f} s)")
    if vae_steps != 0 and (out / "fashiongen").is_dir():
        write_vae(out, vae_steps)
