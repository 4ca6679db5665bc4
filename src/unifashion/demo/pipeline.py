"""`make demo`: the main job on the synthetic benchmark, end to end, on a CPU.

Stages (each timed into `<run dir>/metrics.json` as `time/<stage>_s`):
  data        write the `small` synthetic benchmark + tiny tokenizers (skipped when present)
  retrieval   build the tiny model from lightning_configs/tiny/phase1_retrieval.yaml, evaluate it
              untrained (keys prefixed `baseline/`), train phase1_retrieval, evaluate again (with
              ITM re-ranking of the ITC top-8); the loss terms' first / last values (`loss/...`)
  captioning  phase1_captioning from the retrieval checkpoint; caption metrics vs untrained
  generation  phase1_image_generation from the retrieval checkpoint (latent diffusion on the tiny VAE);
              FID-proxy and colour accuracy vs untrained and vs the real images
  composed    phase2_composed from the captioning + generation checkpoints, on Fashion-IQ triplets
              with gallery captions written by the demo's own captioner; CIR table (full / w/o cap /
              w/o img) vs untrained, image-only and text-only baselines
`make demo-full` adds:
  tryon       finetune_tryon on the synthetic VITON-HD (paired SSIM, unpaired FID-proxy / KID-proxy)
  design      finetune_design (sketch + text; colour asked in the text vs colour generated)
`make ablation` runs `ablation` (phase 2 with CIR terms only / + ITG / + ITG + denoising) after the
demo. The same configs run with `unifashion fit --config ...`; this file only chains them. Each stage
leaves a stable checkpoint copy `<run dir>/<stage>.ckpt` for `unifashion eval`, the API and the notebooks.

Stages that do not depend on each other run side by side, one CPU thread each (`demo.parallel`): the
pretraining of the tiny LLM and VAE (the end of `data`) beside `retrieval`, `captioning` beside
`generation` (the captioning job also writes the composed stage's gallery captions and evaluates the
untrained generator, so that generation's job only trains and evaluates), `tryon` beside `design`; when
one of a pair ends, the other takes both cores from its next timed step. Their logs go to `<run dir>/logs/<stage>.log` and are printed when both are done.
`unifashion demo --sequential` runs every stage in this process, one after the other.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from unifashion.demo.parallel import Job, run_side_by_side
from unifashion.demo.timer import Timer
from unifashion.tasks.report import PAPER_NUMBERS, format_table, update_metrics_json

CONFIG_DIR = Path(__file__).resolve().parents[3] / "lightning_configs" / "tiny"
STAGES = ("data", "retrieval", "captioning", "generation", "composed")
"""The stages of `make demo`."""
FULL_STAGES = (*STAGES, "tryon", "design")
"""The stages of `make demo-full`."""
ALL_STAGES = (*FULL_STAGES, "ablation")
RERANK_K = 8
"""ITM re-ranking of the ITC top-k in the retrieval stage's evaluation (rows `full_itm`, `full_itm_lavis`)."""
LM_STEPS = 100
"""Pretraining steps of the tiny caption LLM written with the data (models/tiny_language_model.py)."""


def _config(name: str) -> Path:
    path = CONFIG_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"tiny config not found: {path} (run the demo from a source checkout)")
    return path


def build_cli(config: Path, run_dir: Path, data: Path, extra: list[str] | None = None):
    """LightningCLI (not run) on a tiny config, pointed at `data` and writing to `run_dir`."""
    from unifashion.lightning_cli import lightning_main

    args = [
        "--config", str(config),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--model.encoder.tokenizer", str(data / "tokenizers" / "qformer"),
        *(extra or []),
    ]
    return lightning_main(args, run=False)


def loss_summary(stage_dir: Path, stage: str, window: int = 3) -> dict[str, float]:
    """First and last logged value of every loss term of a stage's CSV log, ``loss/<stage>/<term>/first|last``
    (means of the first and last `window` logged steps; term `total` is the weighted sum), and ``.../prior`` for the ITM terms (the loss
    of a matcher that learned nothing, `losses.matching.ITM_PRIOR_LOSS`)."""
    import csv

    from unifashion.losses.matching import ITM_PRIOR_LOSS

    logs = sorted(Path(stage_dir).rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return {}
    with open(logs[-1], newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, float] = {}
    for column in rows[0] if rows else ():
        if not (column.startswith("train/loss_") and column.endswith("_step")):
            continue
        term = column[len("train/loss_"): -len("_step")] or "total"  # train/loss_step: the weighted sum
        values = [float(r[column]) for r in rows if r[column]]
        if values:
            out[f"loss/{stage}/{term}/first"] = sum(values[:window]) / len(values[:window])
            out[f"loss/{stage}/{term}/last"] = sum(values[-window:]) / len(values[-window:])
            if term.endswith("itm"):
                out[f"loss/{stage}/{term}/prior"] = ITM_PRIOR_LOSS
    return out


def _keep_last(stage_dir: Path, out: Path) -> Path:
    """Copies the newest `last.ckpt` under a stage's folder to a stable `<run dir>/<stage>.ckpt`."""
    found = sorted(stage_dir.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no last.ckpt under {stage_dir}: did the stage train?")
    shutil.copyfile(found[-1], out)
    print(f"{out.stem} checkpoint: {out}")
    return out


def retrieval_stage(data: Path, run_dir: Path, timer: Timer, evaluate: bool = True) -> dict[str, float]:
    """The retrieval stage: the tiny model of phase1_retrieval.yaml evaluated untrained (`baseline/` keys),
    trained, evaluated again (`retrieval_evaluation`; with `evaluate` False the caller runs that later, as
    `make demo` does beside the generation stage), its loss summary; the stage's last checkpoint is copied
    to ``<run dir>/retrieval.ckpt``."""
    from unifashion.api import UniFashion
    from unifashion.tasks.cmr.evaluate import run_cmr

    cli = build_cli(_config("phase1_retrieval.yaml"), run_dir / "retrieval", data,
                    ["--data.init_args.root", str(data / "fashiongen")])
    model = UniFashion(cli.model)  # the API on the module being trained (modes restored after each call)
    metrics = timer.run("eval_baseline_cmr", lambda: run_cmr(model, data, prefix="baseline/"))
    timer.run("train_retrieval", lambda: cli.trainer.fit(cli.model, cli.datamodule))
    metrics |= loss_summary(run_dir / "retrieval", "retrieval")
    shutil.copyfile(cli.trainer.checkpoint_callback.last_model_path, run_dir / "retrieval.ckpt")
    print(f"retrieval checkpoint: {run_dir / 'retrieval.ckpt'}")
    if evaluate:
        metrics |= timer.run("eval_cmr", lambda: run_cmr(model, data, rerank_k=RERANK_K))
    return metrics


def retrieval_evaluation(data: Path, run_dir: Path, timer: Timer) -> dict[str, float]:
    """The trained retrieval model's evaluation (`cmr/...`, ITM re-ranking of the ITC top-k included), read
    from ``<run dir>/retrieval.ckpt``."""
    from unifashion.api import UniFashion
    from unifashion.tasks.cmr.evaluate import run_cmr

    model = UniFashion.from_checkpoint(run_dir / "retrieval.ckpt", device="cpu", show_progress=False)
    return timer.run("eval_cmr", lambda: run_cmr(model, data, rerank_k=RERANK_K))


def captioning_job(data: Path, run_dir: Path, timer: Timer, gallery_captions: bool = False,
                   generation_baseline: bool = False, retrieval_eval: bool = False) -> dict[str, float]:
    """The captioning stage and what `make demo` runs beside the generation stage's training (the longest
    side-by-side stage, so this is off the critical path): the tiny caption LLM's pretraining when it is
    missing, the captioning stage, then with `gallery_captions` the composed stage's gallery captions
    (`demo.composed.write_gallery_captions`), with `generation_baseline` the untrained generator's
    evaluation (`demo.generation.generation_baseline`) and with `retrieval_eval` the trained retrieval
    model's (`retrieval_evaluation`)."""
    from unifashion.demo.captioning import captioning_stage
    from unifashion.demo.composed import write_gallery_captions
    from unifashion.demo.generation import generation_baseline as evaluate_untrained_generator
    from unifashion.models.tiny_assets import TINY_LLM_DIR, pretrain_tiny_parts

    if not (data / TINY_LLM_DIR / "config.json").is_file():
        timer.run("pretrain_llm", lambda: pretrain_tiny_parts(data, LM_STEPS, vae_steps=0))
    metrics = captioning_stage(data, run_dir, run_dir / "retrieval.ckpt", timer, build_cli, _config)
    if gallery_captions:
        write_gallery_captions(data, run_dir, _keep_last(run_dir / "captioning", run_dir / "captioning.ckpt"), timer)
    if generation_baseline:
        metrics |= evaluate_untrained_generator(data, run_dir, run_dir / "retrieval.ckpt", timer, build_cli, _config)
    if retrieval_eval:
        metrics |= retrieval_evaluation(data, run_dir, timer)
    return metrics


def _stage_job(name: str, data: Path, run_dir: Path, stages: tuple[str, ...]) -> Job:
    """The `demo.parallel.Job` of a stage by name, in a run of `stages`. With a captioning stage in the run,
    its job (`captioning_job`) also takes the work that would otherwise lengthen the critical path: the
    tiny LLM's pretraining (not `data_pretrained`'s), retrieval's evaluation (not `retrieval`'s) and the
    untrained generator's (not `generation`'s); `data_pretrained` pretrains the tiny parts that are missing."""
    from unifashion.demo.generation import generation_stage
    from unifashion.demo.tryon import tryon_stage
    from unifashion.models.tiny_assets import TINY_LLM_DIR, pretrain_tiny_parts
    from unifashion.models.tiny_autoencoder import TINY_VAE_DIR

    ckpt = run_dir / "retrieval.ckpt"
    captioning = "captioning" in stages
    if name == "data_pretrained":  # whichever of the tiny LLM and VAE is missing (the LLM: unless captioning does it)
        lm_steps = 0 if captioning or (data / TINY_LLM_DIR / "config.json").is_file() else LM_STEPS
        vae_steps = 0 if (data / TINY_VAE_DIR / "config.json").is_file() else None
        return Job(pretrain_tiny_parts, (data, lm_steps, vae_steps))
    return {
        "retrieval": Job(retrieval_stage, (data, run_dir), {"evaluate": not captioning}),
        "captioning": Job(captioning_job, (data, run_dir), {
            "gallery_captions": "composed" in stages, "generation_baseline": "generation" in stages,
            "retrieval_eval": "retrieval" in stages}),
        "generation": Job(generation_stage, (data, run_dir, ckpt), {"build_cli": build_cli, "config": _config,
                                                                    "baseline": not captioning}),
        "tryon": Job(tryon_stage, (data, run_dir, ckpt), {"build_cli": build_cli, "config": _config, "kind": "tryon"}),
        "design": Job(tryon_stage, (data, run_dir, ckpt), {"build_cli": build_cli, "config": _config,
                                                           "kind": "design"}),
    }[name]


def _run_group(names: list[str], data: Path, run_dir: Path, timer: Timer, side_by_side: bool,
               stages: tuple[str, ...]) -> dict[str, float]:
    """Runs independent stages: side by side (one thread each, `demo.parallel`) when there are two and
    `side_by_side`, else one after the other in this process. Returns their merged metrics (the tiny
    parts' pretraining returns none)."""
    metrics: dict[str, float] = {}
    if side_by_side and len(names) > 1:
        results = run_side_by_side({n: _stage_job(n, data, run_dir, stages) for n in names}, run_dir / "logs")
        for name, result in results.items():
            timer.times |= result.times
            timer.times[f"time/{name}_s"] = round(result.wall_s, 2)
            if name != "data_pretrained":
                metrics |= result.value
        return metrics
    for name in names:
        job = _stage_job(name, data, run_dir, stages)
        if name == "data_pretrained":
            timer.run(name, lambda job=job: job.fn(*job.args))
        else:
            metrics |= job.fn(*job.args, timer=timer, **job.kwargs)
    return metrics


def run_demo(args) -> int:
    # absolute: the checkpoints record the tokenizer, LLM and init_from paths, and are reloaded from
    # other working directories (notebooks/, eval commands)
    data, run_dir = Path(args.data).resolve(), Path(args.run_dir).resolve()
    stages = tuple(args.stages or STAGES)
    side_by_side = not getattr(args, "sequential", False)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    timer = Timer()
    metrics: dict[str, float] = {}
    wall = time.perf_counter()

    first: list[str] = []  # the tiny VAE (and LLM) when missing, and the retrieval stage: independent
    if "data" in stages:
        marker = data / "fashiongen" / "fashiongen_256_256_validation.h5"
        from unifashion.models.tiny_assets import TINY_LLM_DIR, synthesize
        from unifashion.models.tiny_autoencoder import TINY_VAE_DIR

        if marker.is_file() and (data / "tokenizers" / "qformer").is_dir():
            print(f"synthetic benchmark found at {data} (delete it to regenerate)")
        else:  # the tiny LLM and VAE are pretrained next, beside the retrieval stage
            timer.run("data", lambda: synthesize(data, seed=0, scale=args.scale, lm_steps=0, vae_steps=0))
        # the tiny LLM's pretraining moves to the captioning job when there is one (`_stage_job`)
        missing = [d for d in (TINY_VAE_DIR, *(() if "captioning" in stages else (TINY_LLM_DIR,)))
                   if not (data / d / "config.json").is_file()]
        if missing:
            first.append("data_pretrained")
    if "retrieval" in stages:
        first.append("retrieval")
    metrics |= _run_group(first, data, run_dir, timer, side_by_side, stages)
    update_metrics_json(metrics_path, metrics | timer.times)

    # captioning and generation both start from the retrieval checkpoint; so do try-on and design. The
    # captioning job also does the work that need not wait (`captioning_job`): with the composed stage to
    # come, the gallery captions are written at once.
    captions_written = "captioning" in stages and "composed" in stages
    for group in (("captioning", "generation"), ("tryon", "design")):
        names = [n for n in group if n in stages]
        metrics |= _run_group(names, data, run_dir, timer, side_by_side, stages)
        for name in names:
            _keep_last(run_dir / name, run_dir / f"{name}.ckpt")
        if names:
            update_metrics_json(metrics_path, metrics | timer.times)

    if "composed" in stages:
        from unifashion.demo.composed import composed_stage

        phase1 = [run_dir / "captioning.ckpt", run_dir / "generation.ckpt"]
        metrics |= composed_stage(data, run_dir, phase1, timer, build_cli, _config, captions_written=captions_written)
        metrics |= loss_summary(run_dir / "composed", "composed")
        _keep_last(run_dir / "composed", run_dir / "composed.ckpt")
        update_metrics_json(metrics_path, metrics | timer.times)

    if "ablation" in stages:
        from unifashion.demo.composed import ablation

        metrics |= ablation(data, run_dir, timer, build_cli, _config)
        update_metrics_json(metrics_path, metrics | timer.times)

    timer.times["time/demo_total_s"] = round(time.perf_counter() - wall, 2)
    update_metrics_json(metrics_path, metrics | timer.times)
    print("\n" + format_table(metrics | timer.times, paper=PAPER_NUMBERS))
    print(f"\nmetrics: {metrics_path}")
    return 0
