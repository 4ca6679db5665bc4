"""The image-generation stage of `make demo` (phase1_image_generation on the synthetic benchmark).

Builds the tiny model of `lightning_configs/tiny/phase1_image_generation.yaml`: latent diffusion as in
the paper-size run (a UNet on the 4-channel latents of a frozen `AutoencoderKL`, SD's scaled-linear
DDPM schedule, v-prediction (see the config), classifier-free guidance on a learned null condition, PLMS /
DPM-Solver++ sampling), with the tiny VAE that `unifashion data synth` pretrains on the synthetic images
(`models/tiny_autoencoder.py`, `<data>/pretrained/vae`, loaded like SD-1.4's VAE through
`generator.vae`) and the Q-Former of the phase1_retrieval checkpoint (`init_from`; frozen in this
phase). 64 x 64 images (the FashionGen originals are square: aspect kept) -> 16 x 16 x 4 latents.

It evaluates the untrained generator (keys prefixed `baseline/`; `generation_baseline` does that part on
its own, which `make demo` runs beside the training), trains L_q2I (eq. 7) and evaluates again, on the first view of the solid-colour validation products (`evaluate_generation`):
FID-proxy / KID-proxy against the real images at the generator's resolution, and the controllability
checks of `tasks/fig/controllability.py` (colour in the garment region, garment type, sleeve), for the
generated images and for the real ones (the ceiling, keys `fig/fashiongen/real/...`).

Outputs under `<run dir>/generation/`: `checkpoints/last.ckpt`, `logs/`, `baseline/unpaired/*.jpg`,
`generated/unpaired/*.jpg`, `baseline_grid.png` (under `<run dir>/generation_baseline/` when
`generation_baseline` ran it) and `grid.png` (rows: the condition image the
encoder sees, the generated garment, the real image at the generator's resolution).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from unifashion.models.tiny_autoencoder import TINY_VAE_DIR

CONFIG_NAME = "phase1_image_generation.yaml"


@dataclass
class GenerationEval:
    """Evaluation settings of the demo's generation stage."""

    max_items: int | None = None
    """Solid-colour validation products generated (one image each, from the queries of its first view);
    None: all of them (123 on the small benchmark: a colour rate's standard error is then ~4.4 points, and
    the seed of the noise alone moves it by up to 5; 64 products left differences of 8 points unresolved)."""
    sampler: str = "dpmsolver++"
    """Inference scheduler ("dpmsolver++", "pndm" or "ddim")."""
    steps: int = 20
    """Sampling steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; None: the config's `generator.guidance_scale`."""
    seed: int = 1234
    """Seed of the initial noise; item k of the HDF5 row r starts from the noise of seed + r (the same
    whatever the batching, the sampler or the model)."""
    batch_size: int = 32
    """Products sampled per call."""
    feature: str = "auto"
    """FID/KID features ("auto", "inception" or "proxy", `tasks.fig.protocol.FidKid`)."""


def solid_products(sidecar: Path, split: str = "validation", max_items: int | None = None) -> list[tuple[int, object]]:
    """(HDF5 row, Garment) of the first view of every solid-colour product of `split`, in file order."""
    from unifashion.data.synthetic.attributes import Garment

    out = []
    with open(sidecar, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["split"] == split and rec["view"] == 0 and rec["garment"]["pattern"] == "solid":
                out.append((int(rec["row"]), Garment(rec["product_id"], **rec["garment"])))
    if not out:
        raise ValueError(f"{sidecar}: no solid-colour {split} product")
    return out[:max_items] if max_items else out


def initial_noise(rows: Sequence[int], shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Initial latents (B, C, h, w): item i drawn from `torch.Generator().manual_seed(seed + rows[i])`."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + int(r))) for r in rows])


def save_rows_grid(rows: Sequence[tuple[str, torch.Tensor]], path: Path, scale: int = 2) -> Path:
    """A PNG of labelled image rows: each (label, images float (n, 3, H, W) in [0, 1]), upscaled `scale` x."""
    n, h, w = rows[0][1].shape[0], rows[0][1].shape[-2], rows[0][1].shape[-1]
    label_w = 72
    canvas = Image.new("RGB", (label_w + n * w * scale, len(rows) * h * scale), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        arr = (images[:n].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (n, H, W, 3)
        for c, a in enumerate(arr):
            tile = Image.fromarray(a).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * w * scale, r * h * scale))
        draw.text((4, r * h * scale + h * scale // 2 - 5), label, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


@torch.no_grad()
def evaluate_generation(model, data_root: Path, out_dir: Path, *, prefix: str = "",
                        settings: GenerationEval | None = None, grid_path: Path | None = None,
                        timing: dict | None = None, keep: dict | None = None) -> dict[str, float]:
    """Generate the solid-colour validation products from their queries and score them.

    Args:
        model: a UniFashionModule with a generator (evaluated in eval mode, handed back as found).
        data_root: the synthetic root (with `fashiongen/` and its `attributes.jsonl`).
        out_dir: the images go to `out_dir/unpaired/<product id>.jpg`.
        prefix: prepended to every key (e.g. "baseline/").
        settings: sampler, steps, guidance, seed, number of products.
        grid_path: optional PNG with condition / generated / real rows (8 products).
        timing: when given, receives "sampling_s" and "s_per_image" (sampling + decoding only).
        keep: when given, receives "generated" and "real", float (N, 3, H, W) in [0, 1].

    Returns:
        ``fig/fashiongen/queries/{FID-proxy,KID-proxy,colour_acc,garment_acc,sleeve_acc}``, the
        ceiling ``fig/fashiongen/real/{colour_acc,garment_acc,sleeve_acc}`` (percent) and, on the latent
        path, ``fig/fashiongen/vae/...``: the same checks on the real images encoded and decoded by the VAE
        (the most a generator on these latents can reach), prefixed.
    """
    from unifashion.data.fashiongen import FashionGenImages, h5_path, read_table
    from unifashion.data.synthetic.common import SIDECAR
    from unifashion.data.transforms import ImageTransform, denormalize
    from unifashion.tasks.fig.controllability import garment_controllability
    from unifashion.tasks.fig.protocol import FidKid, write_generated

    ev = settings or GenerationEval()
    root = Path(data_root) / "fashiongen" if (Path(data_root) / "fashiongen").is_dir() else Path(data_root)
    gen = model.generator
    cfg = gen.config
    size = (cfg.height, cfg.width)
    products = solid_products(root / SIDECAR, "validation", ev.max_items)
    table = read_table(h5_path(root, "validation"), lambda err: None)
    images = FashionGenImages(table, [r for r, _ in products], ImageTransform(model.encoder.config.image_size),
                              pairs=False, target_size=size)
    f = gen.vae_scale_factor
    latent_shape = (gen.latent_channels, cfg.height // f, cfg.width // f)
    fid = FidKid("fashiongen", "queries", feature=ev.feature, kid_subset_size=max(2, min(100, len(products))))
    conds, fakes, reals = [], [], []
    was_training = model.training
    model.eval()
    sampling = 0.0
    try:
        for start in range(0, len(products), ev.batch_size):
            chunk = products[start: start + ev.batch_size]
            items = [images[start + k] for k in range(len(chunk))]
            pixels = torch.stack([it["image"] for it in items]).to(model.device)  # (b, 3, S, S)
            real = (torch.stack([it["generation_image"] for it in items]) + 1) / 2  # (b, 3, H, W) in [0, 1]
            queries = model.encoder.encode_image(pixels).query_output  # (b, Q, H_q)
            noise = initial_noise([r for r, _ in chunk], latent_shape, ev.seed)  # (b, C, h, w)
            t0 = time.perf_counter()
            fake = gen.sample(queries, sampler=ev.sampler, steps=ev.steps, guidance_scale=ev.guidance_scale,
                              latents=noise).float().cpu()  # (b, 3, H, W)
            sampling += time.perf_counter() - t0
            fid.update(real, real=True)
            fid.update(fake, real=False)
            conds.append(denormalize(pixels.cpu()))
            fakes.append(fake)
            reals.append(real)
            write_generated(fake, [str(g.product_id) for _, g in chunk], out_dir, "unpaired")
    finally:
        model.train(was_training)
    fake_all, real_all = torch.cat(fakes), torch.cat(reals)
    garments = [g for _, g in products]
    metrics = fid.compute()
    checked = [("queries", fake_all), ("real", real_all)]
    if gen.vae is not None:  # the latent path's own ceiling: the real images through the VAE and back
        recon = torch.cat([gen.decode_latents(gen.encode_images(chunk.to(model.device) * 2 - 1, sample=False)).cpu()
                           for chunk in real_all.split(ev.batch_size)])  # (N, 3, H, W) in [0, 1]
        checked.append(("vae", recon.float()))
    for who, imgs in checked:
        scores = garment_controllability(imgs, garments)
        metrics |= {f"fig/fashiongen/{who}/{k}": v for k, v in scores.items() if k.endswith("_acc")}
    if grid_path is not None:
        save_rows_grid([("condition", torch.cat(conds)[:8]), ("generated", fake_all[:8]), ("real", real_all[:8])],
                       grid_path)
    if keep is not None:
        keep.update(generated=fake_all, real=real_all)
    if timing is not None:
        timing.update(sampling_s=sampling, s_per_image=sampling / len(products))
    return {prefix + k: v for k, v in metrics.items()}


def generation_stage(
    data: Path,
    run_dir: Path,
    retrieval_ckpt: Path,
    timer,
    build_cli: Callable,
    config: Callable[[str], Path],
    eval_settings: GenerationEval | None = None,
    extra_args: list[str] | None = None,
    baseline: bool = True,
) -> dict[str, float]:
    """Train and evaluate the tiny generator; returns the `fig/...` metrics (and `baseline/fig/...`).

    Args:
        data: root of the synthetic benchmark (with `fashiongen/`, `tokenizers/` and `pretrained/vae`).
        run_dir: the demo's run directory; this stage writes to `run_dir / "generation"`.
        retrieval_ckpt: the phase1_retrieval checkpoint whose encoder is loaded (`model.init_from`).
        timer: the demo's `Timer` (records `time/<stage>_s`).
        build_cli: `demo.build_cli(config, run_dir, data, extra)` -> an un-run LightningCLI.
        config: `demo._config(name)` -> path of a tiny config.
        eval_settings: evaluation settings (default `GenerationEval()`).
        extra_args: further CLI overrides (e.g. `["--trainer.max_steps", "10"]`).
        baseline: also evaluate the untrained generator first (`make demo` runs that part,
            `generation_baseline`, in the job beside this one instead).

    Raises:
        FileNotFoundError: if `retrieval_ckpt` or the tiny VAE does not exist.
    """
    ev = eval_settings or GenerationEval()
    out = Path(run_dir) / "generation"
    cli = _generation_cli(data, out, retrieval_ckpt, build_cli, config, extra_args)
    model = cli.model

    def evaluate(prefix: str, folder: str, grid: str) -> dict[str, float]:
        return evaluate_generation(model, Path(data), out / folder, prefix=prefix, settings=ev, grid_path=out / grid)

    metrics: dict[str, float] = {}
    if baseline:
        metrics |= timer.run("eval_baseline_fig", lambda: evaluate("baseline/", "baseline", "baseline_grid.png"))
    timer.run("train_generation", lambda: cli.trainer.fit(model, cli.datamodule))
    metrics |= timer.run("eval_fig", lambda: evaluate("", "generated", "grid.png"))
    print(f"generation: {cli.trainer.global_step} training steps; grid: {out / 'grid.png'} "
          "(rows: condition, generated, real)")
    return metrics


def _generation_cli(data: Path, out: Path, retrieval_ckpt: Path, build_cli: Callable,
                    config: Callable[[str], Path], extra_args: list[str] | None = None):
    """The un-run LightningCLI of the generation stage (its model seeded and initialised, not trained)."""
    retrieval_ckpt = Path(retrieval_ckpt)
    if not retrieval_ckpt.is_file():
        raise FileNotFoundError(f"generation stage: retrieval checkpoint {retrieval_ckpt} not found "
                                "(run the retrieval stage first: `unifashion demo --stages retrieval`)")
    vae = Path(data) / TINY_VAE_DIR
    if not (vae / "config.json").is_file():
        raise FileNotFoundError(f"generation stage: no tiny VAE at {vae} (written by `unifashion data synth`; "
                                "models/tiny_autoencoder.py)")
    return build_cli(config(CONFIG_NAME), out, Path(data),
                     ["--data.init_args.root", str(Path(data) / "fashiongen"),
                      "--model.generator.vae", str(vae),
                      "--model.init_from", str(retrieval_ckpt), *(extra_args or [])])


def generation_baseline(
    data: Path,
    run_dir: Path,
    retrieval_ckpt: Path,
    timer,
    build_cli: Callable,
    config: Callable[[str], Path],
    eval_settings: GenerationEval | None = None,
) -> dict[str, float]:
    """The untrained generator's `baseline/fig/...` metrics (and the real / VAE ceilings), as
    `generation_stage(baseline=True)` computes them before training: the same config and seed build the
    same untrained model, so `make demo` runs this beside the training instead of before it.
    Writes `<run dir>/generation_baseline/` (its images and `baseline_grid.png`)."""
    out = Path(run_dir) / "generation_baseline"
    cli = _generation_cli(data, out, retrieval_ckpt, build_cli, config)
    return timer.run("eval_baseline_fig", lambda: evaluate_generation(
        cli.model, Path(data), out / "baseline", prefix="baseline/", settings=eval_settings or GenerationEval(),
        grid_path=out / "baseline_grid.png"))
