"""Every shipped YAML parses against the real signatures (LightningCLI, no instantiation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from unifashion.module import UniFashionModule

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
PHASE_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "deepspeed")
OVERLAYS = sorted((CONFIGS / "deepspeed").glob("*.yaml"))


class ParseOnlyCLI(LightningCLI):
    """Parses and type-checks a config; builds nothing (paths in paper configs need not exist)."""

    def instantiate_classes(self) -> None:
        pass


def parse(*configs: Path):
    cli = ParseOnlyCLI(UniFashionModule, LightningDataModule, subclass_mode_data=True, run=False,
                       args=[a for c in configs for a in ("--config", str(c))])
    return cli.config


def test_there_are_configs():
    assert any(p.parent.name == "tiny" for p in PHASE_CONFIGS)
    assert any(p.parent.name == "lightning_configs" for p in PHASE_CONFIGS)


@pytest.mark.parametrize("path", PHASE_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_phase_config_parses(path):
    config = parse(path)
    assert config.model.phase in path.stem or path.stem.startswith(config.model.phase.split("_")[0])
    assert config.data.class_path.startswith("unifashion.data.")


@pytest.mark.parametrize("path", OVERLAYS, ids=lambda p: p.name)
def test_deepspeed_overlay_parses(path):
    config = parse(CONFIGS / "phase1_retrieval.yaml", path)
    assert "DeepSpeedStrategy" in str(config.trainer.strategy)


def test_bad_value_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny" / "phase1_retrieval.yaml").read_text().replace(
        "phase: phase1_retrieval", "phase: phase9"))
    with pytest.raises(SystemExit):
        parse(bad)
