"""Every shipped paper-size config in lightning_configs/*.yaml starts, trains two steps and validates.

The configs run unchanged, through `unifashion fit` (LightningCLI), from a working directory laid
out as they expect: the datasets at their `data/...` roots (the official-layout fixtures of
fixtures_data.py / fixtures_vitonhd.py) and tiny pretrained models saved at their `checkpoints/...`
paths with the libraries' own `save_pretrained` (a BLIP-2 retrieval directory, a causal-LM directory
with its tokenizer, a Stable Diffusion directory with unet/ vae/ scheduler/), i.e. the path a user
with real weights takes. On top of each config only the accelerator, the step counts, batch sizes
and workers, and the generated image size are overridden on the command line; the trainer, the
TensorBoard logger, the callbacks, the data modules (CombinedDataModule included) and the
`init_from` chain are the config's own: each phase loads the checkpoint its predecessor's
config wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from fixtures_data import (
    F200_TRAIN,
    FG_TRAIN,
    FG_VAL,
    FIQ_CAPTIONS,
    FIQ_SPLITS,
    write_fashion200k,
    write_fashiongen,
    write_fashioniq,
)
from fixtures_vitonhd import CAPTIONS as VITON_CAPTIONS
from fixtures_vitonhd import write_vitonhd

from unifashion.cli.fit import lightning_main
from unifashion.models.instructions import INSTRUCTIONS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "lightning_configs"
PAPER_CONFIGS = sorted(CONFIGS.glob("*.yaml"))  # the paper-size ones (tiny/ and deepspeed/ are folders)
STEPS = 2

PREDECESSOR = {  # phase -> the phase whose checkpoint `init_from` names (DESIGN.md's chain)
    "phase1_captioning": "phase1_retrieval",
    "phase1_generative": "phase1_retrieval",
    "phase1_image_generation": "phase1_retrieval",
    "phase2_composed": "phase1_generative",
    "finetune_tryon": "phase2_composed",
    "finetune_design": "phase2_composed",
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def checkpoint_dirpath(config: dict) -> str:
    """The `dirpath` of the config's ModelCheckpoint callback (it must name one)."""
    for cb in config["trainer"].get("callbacks", []):
        if cb["class_path"].endswith("ModelCheckpoint"):
            assert cb["init_args"].get("dirpath"), "ModelCheckpoint without dirpath: the checkpoint lands in a versioned log dir"
            assert cb["init_args"].get("save_last") is True
            return cb["init_args"]["dirpath"]
    raise AssertionError("no ModelCheckpoint callback")


def data_modules(data: dict, prefix: str = "--data") -> list[tuple[str, dict]]:
    """(command-line prefix, init_args) of every leaf data module (CombinedDataModule's parts too)."""
    if data["class_path"].endswith("CombinedDataModule"):
        out = []
        for name, part in data["init_args"].items():
            if isinstance(part, dict) and "class_path" in part:
                out += data_modules(part, f"{prefix}.init_args.{name}")
        return out
    return [(prefix, data)]


# ---------------------------------------------------------------- the working directory


def _words() -> list[str]:
    texts = [r[2].decode("latin-1") for r in FG_TRAIN + FG_VAL] + [d for _, d in F200_TRAIN]
    texts += [c for cs in VITON_CAPTIONS.values() for c in cs]
    texts += [c for cat in FIQ_CAPTIONS.values() for rows in cat.values() for r in rows for c in r["captions"]]
    texts += [FIQ_TARGET_CAPTION]
    texts += [s for options in INSTRUCTIONS.values() for s in options]
    return texts


def _write_encoder(path: Path, tok_dir: Path) -> None:
    from unifashion.models.encoder import EncoderConfig, MultimodalEncoder

    # the paper's 224 px input and 32 queries; a 56 px patch keeps the ViT at 16 patches
    torch.manual_seed(0)
    cfg = EncoderConfig.tiny(str(tok_dir), image_size=224, patch_size=56, num_query_tokens=32, max_text_length=64)
    MultimodalEncoder(cfg).save_pretrained(path)


def _write_llm(path: Path, texts: list[str]) -> None:
    from unifashion.models.captioner import CaptionerConfig, build_tiny_language_model
    from unifashion.models.tokenizers import train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts * 2, path, vocab_size=400)
    torch.manual_seed(0)
    model = build_tiny_language_model(CaptionerConfig(tokenizer=str(path), hidden_size=32, num_layers=1,
                                                      num_heads=2, intermediate_size=64), tok)
    model.save_pretrained(path)


def _write_stable_diffusion(path: Path) -> None:
    from unifashion.models.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(num_queries=32, height=32, width=24, sample_size=16), query_dim=32)
    gen.unet.save_pretrained(path / "unet")  # only what a diffusers SD directory holds
    gen.vae.save_pretrained(path / "vae")
    gen.scheduler.save_pretrained(path / "scheduler")


FIQ_TARGET_CAPTION = "a fitted cotton garment with short sleeves"


def _write_fashioniq(root: Path, init_args: dict) -> None:
    """The Fashion-IQ fixture, plus the Fashion-IQ-cap files `target_captions` names (what
    `unifashion caption --style fashioniq` writes from a phase-1 checkpoint) for train and val."""
    import json

    dataset_dir = write_fashioniq(root)
    pattern = init_args.get("target_captions")
    if pattern:
        for cat, splits in FIQ_SPLITS.items():
            for split in ("train", "val"):
                rows = [{"image": a, "caption": f"{FIQ_TARGET_CAPTION} {i}"} for i, a in enumerate(splits[split])]
                (dataset_dir / pattern.format(split=split, cat=cat)).write_text(json.dumps(rows))


DATA_WRITERS = {  # data module -> writer(root, init_args) of a fixture in its official layout
    "unifashion.data.fashiongen.FashionGenDataModule": lambda root, _: write_fashiongen(root),
    "unifashion.data.fashion200k.Fashion200KDataModule": lambda root, _: write_fashion200k(root),
    "unifashion.data.vitonhd.VitonHDDataModule": lambda root, _: write_vitonhd(root),
    "unifashion.data.fashioniq.FashionIQDataModule": _write_fashioniq,
}


def build_workspace(ws: Path) -> Path:
    """Writes what the paper configs' relative paths name under `ws`, with tiny models; returns `ws`."""
    from unifashion.models.tokenizers import train_wordpiece_tokenizer

    texts = _words()
    qtok = ws / "_qformer_tokenizer"
    train_wordpiece_tokenizer(texts * 2, qtok, vocab_size=400)
    written: set[Path] = set()
    for path in PAPER_CONFIGS:
        cfg = load(path)
        model = cfg["model"]
        targets = [(model["encoder"]["pretrained"], lambda p: _write_encoder(p, qtok))]
        if model.get("captioner"):
            targets.append((model["captioner"]["llm"], lambda p: _write_llm(p, texts)))
        if model.get("generator"):
            targets.append((model["generator"]["pretrained"], _write_stable_diffusion))
        for _, dm in data_modules(cfg["data"]):
            targets.append((dm["init_args"]["root"], lambda p, dm=dm: DATA_WRITERS[dm["class_path"]](p, dm["init_args"])))
        for rel, write in targets:
            target = ws / rel
            if target not in written:
                write(target)
                written.add(target)
    return ws


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("paper"))


# ---------------------------------------------------------------- running a config


def overrides(path: Path) -> list[str]:
    """Command-line overrides: accelerator, step counts, batch sizes / workers, generated image size."""
    cfg = load(path)
    args = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
            "--trainer.strategy", "auto", "--trainer.max_steps", str(STEPS),
            "--trainer.limit_train_batches", str(STEPS), "--trainer.limit_val_batches", "1",
            "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for prefix, dm in data_modules(cfg["data"]):
        viton = dm["class_path"].endswith("VitonHDDataModule")
        # the fixtures' first 4 pairs hold 2 products (ITM needs a negative); VITON-HD trains on 2 pairs
        args += [f"{prefix}.init_args.batch_size", "2" if viton else "4", f"{prefix}.init_args.num_workers", "0"]
        if viton:
            args += [f"{prefix}.init_args.height", "32", f"{prefix}.init_args.width", "24"]
        if dm["init_args"].get("generation_size"):  # diffusion targets at the generator's size
            args += [f"{prefix}.init_args.generation_size", "[32, 24]"]
    if cfg["model"].get("generator"):
        args += ["--model.generator.height", "32", "--model.generator.width", "24"]
    return args


def config_of_phase(phase: str) -> Path:
    found = [p for p in PAPER_CONFIGS if load(p)["model"]["phase"] == phase]
    assert len(found) == 1, f"expected one paper config of phase {phase!r}, found {[p.name for p in found]}"
    return found[0]


class Runs:
    """The fits of one workspace, each run once, its predecessor first (the `init_from` chain)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clis: dict[str, object] = {}

    def fit(self, path: Path):
        """`unifashion fit --config <path> <overrides>` in the workspace; returns the LightningCLI."""
        if path.stem not in self.clis:
            init_from = load(path)["model"].get("init_from")
            if init_from and not (self.root / init_from).is_file():
                self.fit(config_of_phase(PREDECESSOR[load(path)["model"]["phase"]]))
            self.clis[path.stem] = lightning_main(["fit", "--config", str(path), *overrides(path)])
        return self.clis[path.stem]


@pytest.fixture(scope="module")
def runs(workspace) -> Runs:
    return Runs(workspace)


# ---------------------------------------------------------------- tests


def test_the_paper_configs_are_collected():
    stems = {p.stem for p in PAPER_CONFIGS}
    assert {"phase1_retrieval", "phase1_captioning", "phase1_generative", "phase1_image_generation",
            "finetune_tryon", "finetune_design"} <= stems, stems
    phases = [load(p)["model"]["phase"] for p in PAPER_CONFIGS]
    assert len(phases) == len(set(phases)), phases


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_init_from_names_the_checkpoint_the_previous_phase_writes(path):
    cfg = load(path)
    phase = cfg["model"]["phase"]
    assert checkpoint_dirpath(cfg) == f"runs/{path.stem}/checkpoints"
    if phase == "phase1_retrieval":  # the chain's start: BLIP-2 weights, no earlier checkpoint
        assert cfg["model"].get("init_from") is None
        return
    previous = load(config_of_phase(PREDECESSOR[phase]))
    assert cfg["model"]["init_from"] == f"{checkpoint_dirpath(previous)}/last.ckpt"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_trains_and_validates(path, runs, monkeypatch):
    monkeypatch.chdir(runs.root)
    cfg = load(path)
    cli = runs.fit(path)
    trainer, model = cli.trainer, cli.model
    assert trainer.global_step == STEPS and trainer.current_epoch >= 1  # >= 1 epoch end: validation ran

    # the config's own logger, checkpoint and data module were used
    from lightning.pytorch.loggers import TensorBoardLogger

    assert isinstance(trainer.logger, TensorBoardLogger)
    assert list(Path(trainer.logger.log_dir).glob("events.out.tfevents.*")), trainer.logger.log_dir
    save_dir = runs.root / cfg["trainer"]["logger"]["init_args"]["save_dir"]
    assert Path(trainer.logger.log_dir).resolve().is_relative_to(save_dir.resolve())
    last = runs.root / checkpoint_dirpath(cfg) / "last.ckpt"
    assert last.is_file()
    assert type(trainer.datamodule).__name__ == cfg["data"]["class_path"].rsplit(".", 1)[1]

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert "train/loss_step" in metrics and "val/loss" in metrics, sorted(metrics)
    parts = [name for name, _ in _combined_parts(cfg["data"])]
    if len(parts) > 1:  # CombinedDataModule: per-dataset validation losses, val/loss their item mean
        per = [metrics[f"val/{name}/loss"] for name in parts]
        assert metrics["val/loss"] == pytest.approx(sum(per) / len(per), rel=1e-5)  # equal batches of 4

    # init_from: the weights this phase keeps frozen are the predecessor checkpoint's after training,
    # and among them are weights an earlier phase trained away from the pretrained directories' values
    init_from = cfg["model"].get("init_from")
    if init_from:
        ckpt = torch.load(runs.root / init_from, map_location="cpu", weights_only=False)
        state = ckpt["state_dict"]
        params = dict(model.named_parameters())
        frozen = [k for k, v in state.items() if k in params and not params[k].requires_grad
                  and params[k].shape == v.shape]
        changed = [k for k in frozen if not torch.equal(params[k].detach().cpu(), state[k])]
        assert frozen and not changed, (len(frozen), changed[:5])
        pretrained = pretrained_weights(runs.root, cfg)
        trained_earlier = [k for k in frozen if k in pretrained and not torch.equal(state[k], pretrained[k])]
        assert trained_earlier, "no frozen weight of this phase differs from its pretrained value"


def pretrained_weights(root: Path, cfg: dict) -> dict[str, torch.Tensor]:
    """The encoder's and the UNet's weights as their pretrained directories hold them, by module key."""
    from safetensors.torch import load_file

    out = {f"encoder.model.{k}": v
           for k, v in load_file(root / cfg["model"]["encoder"]["pretrained"] / "model.safetensors").items()}
    if cfg["model"].get("generator"):
        unet = root / cfg["model"]["generator"]["pretrained"] / "unet" / "diffusion_pytorch_model.safetensors"
        out |= {f"generator.unet.{k}": v for k, v in load_file(unet).items()}
    return out


def _combined_parts(data: dict) -> list[tuple[str, dict]]:
    if data["class_path"].endswith("CombinedDataModule"):
        return [(n, p) for n, p in data["init_args"].items() if isinstance(p, dict) and "class_path" in p]
    return [("data", data)]


def test_sequential_validation_loaders_log_per_dataset_keys(runs, monkeypatch):
    """A data module with several sequential validation loaders (dataloader_idx) logs the same
    per-dataset keys; each equals the validation of that dataset's loader alone (the reference): the
    whole loss for the first loader, the ITC term (no random draw) for every loader (validation_step
    seeds the ITM negatives with the loader's index too)."""
    monkeypatch.chdir(runs.root)
    cli = runs.fit(CONFIGS / "phase1_retrieval.yaml")
    parts = cli.trainer.datamodule.parts
    loaders = {name: parts[name].val_dataloader() for name in ("fashiongen", "fashion200k")}
    both = cli.trainer.validate(cli.model, dataloaders=list(loaders.values()), verbose=False)
    keys = {k for d in both for k in d}
    assert {"val/fashiongen/loss", "val/fashion200k/loss", "val/loss/dataloader_idx_0",
            "val/loss/dataloader_idx_1"} <= keys, sorted(keys)
    for i, (name, loader) in enumerate(loaders.items()):
        alone = cli.trainer.validate(cli.model, dataloaders=[loader], verbose=False)[0]
        assert f"val/{name}/loss" not in alone  # one loader: the plain keys only
        assert both[i][f"val/{name}/loss_itc"] == pytest.approx(alone["val/loss_itc"], rel=1e-6)
        assert both[i][f"val/loss_itc/dataloader_idx_{i}"] == pytest.approx(alone["val/loss_itc"], rel=1e-6)
        if i == 0:
            assert both[i][f"val/{name}/loss"] == pytest.approx(alone["val/loss"], rel=1e-6)


@pytest.mark.parametrize("verb", ["test", "predict"])
def test_test_and_predict_run_on_the_combined_data_module(verb, runs, monkeypatch):
    """`unifashion test|predict --config phase1_retrieval.yaml --ckpt_path <its last.ckpt>`: the
    CombinedDataModule's test loader (combined like validation) and predict loaders (sequential)."""
    monkeypatch.chdir(runs.root)
    path = CONFIGS / "phase1_retrieval.yaml"
    runs.fit(path)
    ckpt = f"{checkpoint_dirpath(load(path))}/last.ckpt"
    cli = lightning_main([verb, "--config", str(path), *overrides(path), f"--trainer.limit_{verb}_batches", "1",
                          "--ckpt_path", ckpt])
    if verb == "test":
        metrics = cli.trainer.callback_metrics
        assert {"test/loss", "test/loss_itc", "test/loss_itm"} <= set(metrics) and torch.isfinite(metrics["test/loss"])
    else:
        predictions = cli.trainer.predict_loop.predictions  # one list per loader: FashionGen, Fashion200K
        assert [len(p) for p in predictions] == [1, 1]
        assert [p[0]["dataset"] for p in predictions] == ["fashiongen", "fashion200k"]
        assert all(p[0]["image_feats"].shape[0] == 4 for p in predictions)
