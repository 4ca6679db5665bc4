"""A tiny Llama language-model-pretrained on the synthetic captions: the demo's stand-in for Vicuna.

The paper's caption branch adapts a *pretrained* LLM with LoRA: the LLM already writes the
language, LoRA and the text TSA only teach it to describe what the queries show. A randomly
initialised, frozen tiny LM would leave LoRA to learn the language too. So `unifashion data
synth` also pretrains a tiny Llama on text only (every training caption of the three styles,
each in the paper's prompt with its dataset's instruction and an empty image slot) and saves it
with `save_pretrained`; the tiny captioning config then loads it through
`AutoModelForCausalLM.from_pretrained`, the code path a real LLM takes.

Deterministic for a given corpus, seed and thread count (seeded initialisation and sampling).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unifashion.models.captioner import CaptionerConfig, build_tiny_language_model, load_tokenizer
from unifashion.models.instructions import INSTRUCTIONS, text_only_prompt

CAPTION_STYLE_DATASET = {"professional": "fashiongen", "short": "fashion200k", "detailed": "fashioniq"}
"""Synthetic caption style (sidecar ``captions`` key) -> the dataset whose instruction it answers."""

REPORT_FILE = "pretraining.json"


@dataclass
class TinyLanguageModelConfig:
    """Architecture and pretraining schedule of the tiny LM."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    steps: int = 100
    """Optimiser steps (100 x 64 = 6,400 prompt+caption texts, ~23 s on 2 CPU cores)."""
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    seed: int = 0


def pretraining_texts(captions: Sequence[tuple[str, str]], seed: int = 0) -> list[str]:
    """Prompt + caption texts, one per (style, caption), the instruction paraphrase drawn seeded.

    Args:
        captions: (style, caption) pairs; style a key of `CAPTION_STYLE_DATASET`.
        seed: seed of the paraphrase draws.

    Returns:
        ``"USER: <Img> </Img> {instruction} Assistant: {caption}"`` strings (eos is added when
        tokenising).

    Raises:
        KeyError: an unknown caption style.
    """
    rng = random.Random(seed)
    texts = []
    for style, caption in captions:
        if style not in CAPTION_STYLE_DATASET:
            raise KeyError(f"unknown caption style {style!r}; known: {sorted(CAPTION_STYLE_DATASET)}")
        instruction = rng.choice(INSTRUCTIONS[CAPTION_STYLE_DATASET[style]])
        texts.append(f"{text_only_prompt(instruction)} {caption.strip()}")
    return texts


def pretrain_tiny_language_model(
    texts: Sequence[str], tokenizer_dir: str | Path, out_dir: str | Path, config: TinyLanguageModelConfig | None = None
) -> dict[str, float]:
    """Trains a tiny Llama on `texts` (next-token loss on every token) and saves it with its tokenizer.

    Args:
        texts: the corpus (see `pretraining_texts`).
        tokenizer_dir: the tiny LLM tokenizer (`models.tokenizers.train_bpe_tokenizer` output).
        out_dir: written with ``save_pretrained`` (config.json, model.safetensors, tokenizer files)
            plus ``pretraining.json`` (the schedule and the first/last losses).
        config: architecture and schedule.

    Returns:
        The report written to ``pretraining.json``.
    """
    cfg = config or TinyLanguageModelConfig()
    if not texts:
        raise ValueError("no texts to pretrain the tiny language model on")
    tokenizer = load_tokenizer(tokenizer_dir)
    arch = CaptionerConfig(tokenizer=str(tokenizer_dir), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                           num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                           max_position_embeddings=cfg.max_position_embeddings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_tiny_language_model(arch, tokenizer)
    eos = tokenizer.eos_token
    corpus = [t + eos for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def factor(step: int) -> float:  # linear warm-up, cosine to 5 %
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for _ in range(cfg.steps):
        batch = tokenizer(rng.sample(corpus, min(cfg.batch_size, len(corpus))), return_tensors="pt", padding=True,
                          truncation=True, max_length=cfg.max_position_embeddings)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # (B, L)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        **asdict(cfg),
        "texts": len(texts),
        "first_loss": losses[0] if losses else float("nan"),
        "last_loss": float(sum(losses[-10:]) / len(losses[-10:])) if losses else float("nan"),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report
