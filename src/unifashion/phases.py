"""The phase table (DESIGN.md) and the one freeze policy driven by it.

A phase is a named row: which loss terms are computed (with their default weights), which batch
kind each term consumes, and which parameter groups train. A term with weight 0 is not computed.
Freezing happens in exactly one place, :func:`unifashion.models.freezing.apply_freeze_policy`,
which the module calls with the phase's `trains` groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from unifashion.models.freezing import apply_freeze_policy  # noqa: F401 (the policy of the phase table)

PhaseName = Literal[
    "phase1_retrieval",
    "phase1_generative",
    "phase1_captioning",
    "phase1_image_generation",
    "phase2_composed",
    "finetune_tryon",
    "finetune_design",
]

# Parameter groups every submodule reports through `parameter_groups()`.
ENCODER_GROUPS = ("vision", "qformer", "projections", "itm_head", "temperature")
CAPTIONER_GROUPS = ("text_adapter", "lora")
GENERATOR_GROUPS = ("image_adapter", "unet", "unet_input", "unet_control")  # unet_control: Figure 3 copy


@dataclass(frozen=True)
class Phase:
    """One row of the phase table.

    Attributes:
        name: the row's name, used in configs (`model.phase`).
        loss_weights: default weight of every loss term the phase computes (eq. numbers in losses/).
        batch_kinds: the batch kind ("pairs" or "triplets") each loss term consumes.
        trains: parameter groups that receive gradients; every other parameter is frozen.
        needs: submodules that must be configured for the phase.
    """

    name: str
    loss_weights: Mapping[str, float]
    batch_kinds: Mapping[str, str]
    trains: tuple[str, ...]
    needs: tuple[str, ...] = field(default=("encoder",))


PHASES: dict[str, Phase] = {
    p.name: p
    for p in (
        # Phase 1, cross-modal pre-training: L_cross = ITC (eq. 3) + ITM (eq. 4).
        Phase(
            "phase1_retrieval",
            {"itc": 1.0, "itm": 1.0},
            {"itc": "pairs", "itm": "pairs"},
            ("vision", "qformer", "projections", "itm_head", "temperature"),
        ),
        # Phase 1, generative half: Q-Former frozen; L_ITG (eq. 6) + L_q2I (eq. 7).
        Phase(
            "phase1_generative",
            {"itg": 1.0, "denoise": 1.0},
            {"itg": "pairs", "denoise": "pairs"},
            ("text_adapter", "lora", "image_adapter", "unet", "unet_input"),
            ("encoder", "captioner", "generator"),
        ),
        # The two halves of phase1_generative on their own (same terms, one submodule each).
        Phase(
            "phase1_captioning",
            {"itg": 1.0},
            {"itg": "pairs"},
            ("text_adapter", "lora"),
            ("encoder", "captioner"),
        ),
        Phase(
            "phase1_image_generation",
            {"denoise": 1.0},
            {"denoise": "pairs"},
            ("image_adapter", "unet", "unet_input"),
            ("encoder", "generator"),
        ),
        # Phase 2, composed fine-tuning (eqs. 10-12): LLM and diffusion frozen, Q-Former tuned.
        Phase(
            "phase2_composed",
            {"cir_itc_img": 1.0, "cir_itc_cap": 1.0, "cir_itm": 1.0, "itg": 1.0, "denoise": 1.0},
            {k: "triplets" for k in ("cir_itc_img", "cir_itc_cap", "cir_itm", "itg", "denoise")},
            ("qformer", "projections", "itm_head", "temperature", "text_adapter", "image_adapter"),
            ("encoder", "captioner", "generator"),
        ),
        # Try-on / design fine-tuning (paper: the Q-Former; the widened UNet input and, with
        # controlnet_copy, the UNet-encoder copy of Figure 3 learn too).
        Phase(
            "finetune_tryon",
            {"denoise": 1.0},
            {"denoise": "tryon"},
            ("qformer", "image_adapter", "unet_input", "unet_control"),
            ("encoder", "generator"),
        ),
        Phase(
            "finetune_design",
            {"denoise": 1.0},
            {"denoise": "tryon"},
            ("qformer", "image_adapter", "unet_input", "unet_control"),
            ("encoder", "generator"),
        ),
    )
}


def get_phase(name: str) -> Phase:
    """Returns the phase row called `name`; a clear error lists the known rows."""
    try:
        return PHASES[name]
    except KeyError:
        raise ValueError(f"unknown phase {name!r}; known phases: {sorted(PHASES)}") from None


def resolve_loss_weights(phase: Phase, overrides: Mapping[str, float] | None) -> dict[str, float]:
    """The phase's default weights updated by `overrides`; an unknown term is an error."""
    weights = dict(phase.loss_weights)
    for name, value in (overrides or {}).items():
        if name not in weights:
            raise ValueError(
                f"loss term {name!r} is not part of phase {phase.name!r} (terms: {sorted(weights)})"
            )
        weights[name] = float(value)
    return weights


def trainable_parameters(module: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that currently require gradients."""
    return [p for p in module.parameters() if p.requires_grad]
