"""`unifashion fit|validate|test|predict`: LightningCLI on UniFashionModule and any LightningDataModule
(`unifashion.lightning_cli`)."""

from __future__ import annotations

from unifashion.lightning_cli import lightning_main  # noqa: F401 (the verb's entry point)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
