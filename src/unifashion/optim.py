"""Optimiser and learning-rate schedule settings (typed, read by LightningCLI)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch


@dataclass
class OptimizerConfig:
    """AdamW with a warm-up + cosine (or constant) schedule.

    Attributes:
        lr: peak learning rate (LAVIS stage 1: 1e-4; paper LLM: 2e-5; paper UNet: 1e-4).
        min_lr: final learning rate of the cosine schedule.
        weight_decay: AdamW weight decay (UniFashion code: 0.05; paper LLM: 0).
        betas: AdamW betas (UniFashion code: (0.9, 0.98); paper LLM: (0.9, 0.99)).
        eps: AdamW epsilon (UniFashion code: 1e-7).
        warmup_steps: linear warm-up steps (an int), ignored when warmup_ratio > 0.
        warmup_ratio: warm-up as a fraction of the total steps (paper LLM: 0.03).
        schedule: "cosine" decays to min_lr over the run; "constant" keeps lr after warm-up.
        lr_multipliers: learning-rate multipliers of the parameters whose name contains a key, e.g.
            ``{"itm_head": 10}`` (a fresh head beside a pretrained body learns faster; the schedule
            scales every group alike). A parameter matching several keys takes the product.
    """

    lr: float = 1e-4
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-7
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    lr_multipliers: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.lr_multipliers.items() if not v > 0}
        if bad:
            raise ValueError(f"optimizer.lr_multipliers must be positive, got {bad}")


def lr_factor(step: int, total: int, cfg: OptimizerConfig) -> float:
    """Multiplier of `cfg.lr` at `step` (0-based) of `total` steps."""
    warmup = int(round(cfg.warmup_ratio * total)) if cfg.warmup_ratio > 0 else cfg.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(params, cfg: OptimizerConfig, total_steps: int):
    """AdamW over `params` (no weight decay on biases, norms, temperatures and query tokens)."""
    buckets: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in params:
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or "query_tokens" in name)
        mult = math.prod(v for k, v in cfg.lr_multipliers.items() if k in name)
        buckets.setdefault((decays, mult), []).append(p)
    groups = [
        {"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": cfg.lr * mult}
        for (decays, mult), ps in sorted(buckets.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, cfg))
    return opt, sched
