"""The try-on and design stages of the demo (finetune_tryon / finetune_design on the synthetic VITON-HD + MGD).

Each stage builds the tiny model of `lightning_configs/tiny/finetune_{tryon,design}.yaml` with the Q-Former
of the phase1_retrieval checkpoint (`init_from`), evaluates the untrained try-on / design model (keys
prefixed `baseline/`), trains eq. 12, and evaluates again on the 40 test persons:

- paired (the person's own garment / sketch and captions): SSIM (torchmetrics) against the real person;
- unpaired (test_pairs.txt: another person's garment / unpaired sketch and that garment's captions):
  FID / KID against the real test persons (proxy features, keys `-proxy`, unless a local Inception file
  is given: `UNIFASHION_INCEPTION_WEIGHTS`, tasks/fig/protocol.py);
- colour: the dominant palette colour of the generated pixels on the person's upper-clothes region
  (``image-parse-v3`` label 5) against the requested garment's primary colour (attribute sidecar) -
  for design the colour is only in the text (the sketch has none), so this is the text-adherence check;
  the same measure on the real paired images is its ceiling (`fig/<ds>/real/colour_acc`).

The tiny UNet has no Stable Diffusion pretraining, so the stage also trains the UNet body (the phase
table keeps it frozen, as the paper does with SD's weights); the rest follows the phase table
(Q-Former, image adapter, widened UNet input, encoder copy).

Outputs under `<run dir>/{tryon,design}/`: `checkpoints/last.ckpt`, `logs/`, `generated/{paired,unpaired}/`,
`baseline/{paired,unpaired}/`, `grid.png` (paired; rows: agnostic person, garment or sketch, untrained,
trained, real) and `grid_unpaired.png`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATASET = {"tryon": "vitonhd", "design": "mgd-vitonhd"}
"""Metric-key dataset names of the two stages (`fig/<name>/<setting>/<metric>`)."""
UPPER_CLOTHES = 5
"""CIHP label of the upper clothes (image-parse-v3), the region the colour check reads."""


@dataclass
class TryOnEval:
    """Evaluation settings of the demo's try-on / design stages."""

    max_items: int | None = None
    """Test persons evaluated per setting (None: all 40 of the small benchmark)."""
    sampler: str = "dpmsolver++"
    """Inference scheduler ("dpmsolver++", "pndm" or "ddim")."""
    steps: int = 20
    """Sampling steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; None: the config's `generator.guidance_scale`."""
    seed: int = 1234
    """Seed of the initial noise."""
    batch_size: int = 20
    """Items generated per call."""
    grid_items: int = 8
    """Columns of the PNG grids."""


def _stack(items: list[dict]) -> dict:
    out = {}
    for k, v in items[0].items():
        out[k] = torch.stack([it[k] for it in items]) if isinstance(v, torch.Tensor) else [it[k] for it in items]
    return out


def _requested_colours(vitonhd_root: Path) -> dict[str, str]:
    """Person / cloth stem ("00013_00") -> primary colour of its garment (the synthetic sidecar)."""
    colours = {}
    with open(vitonhd_root / "attributes.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            colours[Path(rec["image"]).stem] = rec["garment"]["primary_colour"]
    return colours


def _garment_region(vitonhd_root: Path, person: str, height: int, width: int) -> np.ndarray:
    """The person's upper-clothes pixels (image-parse-v3 label 5), bool (H, W) at the output size."""
    with Image.open(vitonhd_root / "test" / "image-parse-v3" / f"{person}.png") as im:
        labels = np.asarray(im.resize((width, height), Image.Resampling.NEAREST))
    return labels == UPPER_CLOTHES


def _grid(rows: list[torch.Tensor], path: Path) -> Path:
    """A PNG with one row per tensor (n, 3, H, W) in [0, 1], shown at 4x (nearest)."""
    canvas = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, rows*H, n*W)
    arr = (canvas.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).resize((arr.shape[1] * 4, arr.shape[0] * 4), Image.Resampling.NEAREST).save(path)
    return path


def evaluate_tryon(module, datamodule, out_dir: Path, kind: str, ev: TryOnEval, prefix: str = "") -> dict:
    """Paired SSIM, unpaired FID/KID, paired/unpaired colour accuracy (module docstring) of a try-on or
    design module; writes the images under `out_dir/{paired,unpaired}/`.

    Returns:
        (metrics, {"paired": (inputs, generated, real), "unpaired": ...}) for the grids.
    """
    from unifashion.data.synthetic.attributes import COLOURS
    from unifashion.models.tryon import TryOnInputs, generate_tryon
    from unifashion.tasks.fig.protocol import FidKid, PairedSsim, colour_accuracy, write_generated

    name = DATASET[kind]
    root = Path(datamodule.root_path())
    colours = _requested_colours(root)
    cfg = module.generator.config
    was_training = module.training
    module.eval()
    metrics: dict[str, float] = {}
    shown = {}
    try:
        for setting in ("paired", "unpaired"):
            ds = datamodule.dataset("test", setting)
            n = len(ds) if ev.max_items is None else min(ev.max_items, len(ds))
            ssim = PairedSsim(name)
            fid = FidKid(name, setting, kid_subset_size=max(2, min(100, n)))
            fakes, reals, requested, regions, first = [], [], [], [], None
            for start in range(0, n, ev.batch_size):
                batch = _stack([ds[i] for i in range(start, min(n, start + ev.batch_size))])
                inputs = TryOnInputs.from_batch(batch)
                fake = generate_tryon(module.encoder, module.generator, inputs, sampler=ev.sampler, steps=ev.steps,
                                      guidance_scale=ev.guidance_scale, seed=ev.seed + start).float().cpu()
                real = (batch["image"] / 2 + 0.5).clamp(0, 1)  # (b, 3, H, W)
                fid.update(real, real=True)
                fid.update(fake, real=False)
                if setting == "paired":
                    ssim.update(fake, real)
                fakes.append(fake)
                reals.append(real)
                requested += [colours[c] for c in batch["cloth_id"]]
                regions += [_garment_region(root, p, cfg.height, cfg.width) for p in batch["person_id"]]
                write_generated(fake, [f"{p}_{c}" for p, c in zip(batch["person_id"], batch["cloth_id"])],
                                out_dir, setting)
                if first is None:
                    first = batch
            fake_all, real_all = torch.cat(fakes), torch.cat(reals)
            metrics |= fid.compute()
            if setting == "paired":
                metrics |= ssim.compute()
                metrics[f"fig/{name}/real/colour_acc"] = colour_accuracy(real_all, requested, COLOURS, regions)
            metrics[f"fig/{name}/{setting}/colour_acc"] = colour_accuracy(fake_all, requested, COLOURS, regions)
            shown[setting] = (first, fake_all, real_all)
    finally:
        module.train(was_training)
    return {prefix + k: v for k, v in metrics.items()}, shown


def _condition_row(batch: dict, kind: str, k: int) -> torch.Tensor:
    """The garment (try-on) or the sketch drawn black on white (design), (k, 3, H, W) in [0, 1]."""
    if kind == "design":
        return (1.0 - batch["sketch"][:k]).expand(-1, 3, -1, -1)
    return (batch["cloth"][:k] / 2 + 0.5).clamp(0, 1)


def tryon_stage(
    data: Path,
    run_dir: Path,
    retrieval_ckpt: Path,
    timer,
    build_cli: Callable,
    config: Callable[[str], Path],
    eval_settings: TryOnEval | None = None,
    extra_args: list[str] | None = None,
    kind: str = "tryon",
) -> dict[str, float]:
    """Train and evaluate the tiny try-on (or design) model; returns the `fig/...` metrics (and `baseline/...`).

    Args:
        data: root of the synthetic benchmark (with `vitonhd/` and `tokenizers/`).
        run_dir: the demo's run directory; this stage writes to `run_dir / kind`.
        retrieval_ckpt: the phase1_retrieval checkpoint whose encoder is loaded (`model.init_from`).
        timer: the demo's `Timer` (records `time/<stage>_s`).
        build_cli: `demo.build_cli(config, run_dir, data, extra)` -> an un-run LightningCLI.
        config: `demo._config(name)` -> path of a tiny config.
        eval_settings: evaluation settings (default `TryOnEval()`).
        extra_args: further CLI overrides (e.g. `["--trainer.max_steps", "10"]`).
        kind: "tryon" (lightning_configs/tiny/finetune_tryon.yaml) or "design" (finetune_design.yaml).

    Raises:
        FileNotFoundError: if `retrieval_ckpt` does not exist (run the retrieval stage first).
    """
    from unifashion.phases import apply_freeze_policy

    if kind not in DATASET:
        raise ValueError(f"kind must be 'tryon' or 'design', got {kind!r}")
    retrieval_ckpt = Path(retrieval_ckpt)
    if not retrieval_ckpt.is_file():
        raise FileNotFoundError(f"{kind} stage: retrieval checkpoint {retrieval_ckpt} not found "
                                "(run the retrieval stage first: `unifashion demo --stages retrieval`)")
    ev = eval_settings or TryOnEval()
    out = Path(run_dir) / kind
    cli = build_cli(config(f"finetune_{kind}.yaml"), out, Path(data),
                    ["--data.init_args.root", str(Path(data) / "vitonhd"),
                     "--model.init_from", str(retrieval_ckpt), *(extra_args or [])])
    model, dm = cli.model, cli.datamodule
    # the tiny UNet has no SD pretraining: its body trains too (the phase table's groups + "unet")
    model.trainable_counts = apply_freeze_policy(
        model.parameter_groups(), (*model.phase.trains, "unet"),
        exclude=("vision",) if model.encoder.config.freeze_vision else ())

    def evaluate(prefix: str, folder: str):
        return evaluate_tryon(model, dm, out / folder, kind, ev, prefix)

    metrics, before = timer.run(f"eval_baseline_{kind}", lambda: evaluate("baseline/", "baseline"))
    timer.run(f"train_{kind}", lambda: cli.trainer.fit(model, dm))
    after_metrics, after = timer.run(f"eval_{kind}", lambda: evaluate("", "generated"))
    metrics |= after_metrics
    k = ev.grid_items
    for setting, file in (("paired", "grid.png"), ("unpaired", "grid_unpaired.png")):
        batch, untrained, _ = before[setting]
        _, trained, real = after[setting]
        _grid([(batch["agnostic"][:k] / 2 + 0.5).clamp(0, 1), _condition_row(batch, kind, k), untrained[:k],
               trained[:k], real[:k]], out / file)
    print(f"{kind}: {cli.trainer.global_step} training steps; grids: {out / 'grid.png'}, {out / 'grid_unpaired.png'} "
          f"(rows: agnostic person, {'sketch' if kind == 'design' else 'garment'}, untrained, trained, real person)")
    return metrics


def design_stage(data: Path, run_dir: Path, retrieval_ckpt: Path, timer, build_cli: Callable,
                 config: Callable[[str], Path], eval_settings: TryOnEval | None = None,
                 extra_args: list[str] | None = None) -> dict[str, float]:
    """The design stage: `tryon_stage(..., kind="design")` (sketch + text -> garment on the person)."""
    return tryon_stage(data, run_dir, retrieval_ckpt, timer, build_cli, config, eval_settings, extra_args,
                       kind="design")
