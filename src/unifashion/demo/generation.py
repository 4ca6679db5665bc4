"""The image-generation stage of `make demo` (phase1_image_generation on the synthetic benchmark).

Builds the tiny model of `lightning_configs/tiny/phase1_image_generation.yaml` with the Q-Former of the
phase1_retrieval checkpoint (`init_from`; frozen in this phase), evaluates the untrained generator
(keys prefixed `baseline/`), trains L_q2I (eq. 7), and evaluates again: FID-proxy / KID-proxy against
the real validation images and the colour accuracy of the generated garments against the requested
(attribute ground-truth) primary colour, with DPM-Solver++ on `max_items` validation products.

Outputs under `<run dir>/generation/`: `checkpoints/last.ckpt`, `logs/`, `baseline/unpaired/*.jpg`,
`generated/unpaired/*.jpg`, `baseline_grid.png` and `grid.png` (condition images on top, generated
garments below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "phase1_image_generation.yaml"


@dataclass
class GenerationEval:
    """Evaluation settings of the demo's generation stage."""

    max_items: int = 48
    """Validation products generated (one image each, from the queries of its first image)."""
    sampler: str = "dpmsolver++"
    """Inference scheduler ("dpmsolver++", "pndm" or "ddim")."""
    steps: int = 20
    """Sampling steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; None: the config's `generator.guidance_scale`."""
    seed: int = 1234
    """Seed of the initial noise."""


def generation_stage(
    data: Path,
    run_dir: Path,
    retrieval_ckpt: Path,
    timer,
    build_cli: Callable,
    config: Callable[[str], Path],
    eval_settings: GenerationEval | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, float]:
    """Train and evaluate the tiny generator; returns the `fig/...` metrics (and `baseline/fig/...`).

    Args:
        data: root of the synthetic benchmark (with `fashiongen/` and `tokenizers/`).
        run_dir: the demo's run directory; this stage writes to `run_dir / "generation"`.
        retrieval_ckpt: the phase1_retrieval checkpoint whose encoder is loaded (`model.init_from`).
        timer: the demo's `Timer` (records `time/<stage>_s`).
        build_cli: `demo.build_cli(config, run_dir, data, extra)` -> an un-run LightningCLI.
        config: `demo._config(name)` -> path of a tiny config.
        eval_settings: evaluation settings (default `GenerationEval()`).
        extra_args: further CLI overrides (e.g. `["--trainer.max_steps", "10"]`).

    Raises:
        FileNotFoundError: if `retrieval_ckpt` does not exist (run the retrieval stage first).
    """
    from unifashion.api import UniFashion
    from unifashion.tasks.fig.evaluate import run_fig

    retrieval_ckpt = Path(retrieval_ckpt)
    if not retrieval_ckpt.is_file():
        raise FileNotFoundError(f"generation stage: retrieval checkpoint {retrieval_ckpt} not found "
                                "(run the retrieval stage first: `unifashion demo --stages retrieval`)")
    ev = eval_settings or GenerationEval()
    out = Path(run_dir) / "generation"
    cli = build_cli(config(CONFIG_NAME), out, Path(data),
                    ["--data.init_args.root", str(Path(data) / "fashiongen"),
                     "--model.init_from", str(retrieval_ckpt), *(extra_args or [])])
    model = cli.model

    def evaluate(prefix: str, folder: str, grid: str) -> dict[str, float]:
        return run_fig(UniFashion(model), data, out / folder, prefix=prefix, max_items=ev.max_items, sampler=ev.sampler,
                       steps=ev.steps, guidance_scale=ev.guidance_scale, seed=ev.seed, grid_path=out / grid)

    metrics = timer.run("eval_baseline_fig", lambda: evaluate("baseline/", "baseline", "baseline_grid.png"))
    timer.run("train_generation", lambda: cli.trainer.fit(model, cli.datamodule))
    metrics |= timer.run("eval_fig", lambda: evaluate("", "generated", "grid.png"))
    print(f"generation: {cli.trainer.global_step} training steps; grid: {out / 'grid.png'} (top: condition images, bottom: generated)")
    return metrics
