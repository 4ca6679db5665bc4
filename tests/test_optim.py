"""Optimiser groups: weight decay on matrices only, learning-rate multipliers by parameter name."""

from __future__ import annotations

import pytest
import torch

from unifashion.optim import OptimizerConfig, build_optimizer, lr_factor


def test_lr_multipliers_and_decay_groups():
    parts = torch.nn.ModuleDict({"body": torch.nn.Linear(3, 3), "itm_head": torch.nn.Linear(3, 2)})
    cfg = OptimizerConfig(lr=1e-3, min_lr=1e-4, warmup_steps=4, lr_multipliers={"itm_head": 10.0})
    opt, sched = build_optimizer(parts.named_parameters(), cfg, total_steps=20)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in parts.named_parameters():
        g = by_param[id(p)]
        mult = 10.0 if name.startswith("itm_head") else 1.0
        assert g["initial_lr"] == pytest.approx(1e-3 * mult), name
        assert g["weight_decay"] == (0.05 if p.ndim == 2 else 0.0), name
    for step in range(6):  # every group follows the same schedule: lr = initial_lr x factor(step)
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(g["initial_lr"] * lr_factor(step, 20, cfg))
        opt.step()
        sched.step()
    assert lr_factor(0, 20, cfg) == pytest.approx(1 / 4) and lr_factor(19, 20, cfg) > 1e-4 / 1e-3


def test_bad_multiplier_is_a_clear_error():
    with pytest.raises(ValueError, match="lr_multipliers"):
        OptimizerConfig(lr_multipliers={"itm_head": 0.0})
