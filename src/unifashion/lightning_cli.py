"""LightningCLI on UniFashionModule and any LightningDataModule: the code path of `unifashion fit`,
shared by the demo (which builds each stage's model, data and trainer from the same tiny configs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def lightning_main(args: Sequence[str] | None = None, run: bool = True):
    """Runs LightningCLI on UniFashionModule and any LightningDataModule (class_path in the config).

    Args:
        args: the command line (e.g. ``["fit", "--config", "..."]``, or without the subcommand when
            `run` is False); None: ``sys.argv``.
        run: False builds the model, data and trainer without running a subcommand.
    """
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    from unifashion.module import UniFashionModule

    if args is not None and list(args) == sys.argv[1:]:
        args = None  # the console script: LightningCLI reads sys.argv itself (no "both given" warning)
    return LightningCLI(
        UniFashionModule,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )
