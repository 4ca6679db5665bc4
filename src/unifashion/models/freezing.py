"""The one freeze policy: the only code that sets `requires_grad` on the model's parameters.

Submodules (encoder, captioner, generator) never freeze anything themselves; they report named
parameter groups (`parameter_groups()`), and the LightningModule calls :func:`apply_freeze_policy`
with the groups its phase trains (phases.py). A standalone submodule is frozen the same way:
``apply_freeze_policy(encoder.parameter_groups(), ["qformer", "projections"])``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn


def apply_freeze_policy(
    groups: Mapping[str, Iterable[nn.Parameter]],
    trains: Iterable[str],
    exclude: Iterable[str] = (),
) -> dict[str, int]:
    """Freezes every parameter, then unfreezes the groups in `trains` minus `exclude`.

    Args:
        groups: parameter group name -> parameters (the union of the submodules' groups).
        trains: the groups the phase trains.
        exclude: groups kept frozen regardless (e.g. "vision" when `freeze_vision` is set).

    Returns:
        group name -> number of trainable parameter elements, for logging.
    """
    trains = set(trains) - set(exclude)
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for name, params in groups.items():
        n = 0
        for p in params:
            if id(p) in seen:
                raise ValueError(f"parameter in group {name!r} also belongs to another group")
            seen.add(id(p))
            p.requires_grad_(name in trains)
            n += p.numel() if name in trains else 0
        counts[name] = n
    return counts
