"""Step time and peak memory of a Lightning fit under DDP / DeepSpeed ZeRO-2 / ZeRO-3 (issue 11).

Runs `unifashion fit` in-process (LightningCLI, `lightning_cli.lightning_main`) on a phase config with
an optional strategy config composed on top (``lightning_configs/deepspeed/zero{2,3}.yaml``), for a few
steps, and records the median step time after `--warmup` steps and the peak accelerator memory
(``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS). Prints and writes one JSON object.

Mid-size run on a lent GPU (bench/gpu_check.sh):

    python3 bench/bench_strategy_fit.py --strategy zero2 --config lightning_configs/tiny/phase1_retrieval.yaml \
        --data data/synthetic --steps 30 --json out/zero2.json -- --model.encoder.vision_hidden_size 768 ...

CPU smoke run (what the test suite does not time): ``--accelerator cpu --strategy none --steps 3``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import lightning as L
import torch

STRATEGY_CONFIGS = {
    "none": None,
    "ddp": None,
    "zero2": "lightning_configs/deepspeed/zero2.yaml",
    "zero3": "lightning_configs/deepspeed/zero3.yaml",
}


class StepTimer(L.Callback):
    """Wall time of every optimizer step (synchronised on CUDA)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="lightning_configs/tiny/phase1_retrieval.yaml")
    ap.add_argument("--strategy", choices=sorted(STRATEGY_CONFIGS), default="none")
    ap.add_argument("--data", default="data/synthetic", help="the synthetic root (tokenizers, fashiongen/)")
    ap.add_argument("--accelerator", default="gpu")
    ap.add_argument("--devices", default="1")
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--run-dir", default="runs/bench_strategy")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", help="further LightningCLI arguments (after --)")
    args = ap.parse_args(argv)

    from unifashion.lightning_cli import lightning_main

    data = Path(args.data)
    run_dir = Path(args.run_dir) / args.strategy
    cli_args = ["--config", args.config]
    if STRATEGY_CONFIGS[args.strategy]:
        cli_args += ["--config", STRATEGY_CONFIGS[args.strategy]]
    elif args.strategy == "ddp":
        cli_args += ["--trainer.strategy", "ddp"]
    cli_args += [
        "--trainer.accelerator", args.accelerator, "--trainer.devices", args.devices,
        "--trainer.precision", args.precision, "--trainer.max_steps", str(args.steps),
        "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        "--model.encoder.tokenizer", str(data / "tokenizers" / "qformer"),
        "--data.init_args.root", str(data / "fashiongen"),
        *args.overrides,
    ]
    cli = lightning_main(cli_args, run=False)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    wall = time.perf_counter() - start
    steady = timer.times[args.warmup:] or timer.times
    result = {
        "config": args.config,
        "strategy": args.strategy,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "precision": args.precision,
        "steps": len(timer.times),
        "median_step_s": statistics.median(steady) if steady else float("nan"),
        "fit_wall_s": round(wall, 2),
        # ZeRO-3 leaves each rank an empty placeholder per parameter; ds_numel is the full size
        "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in cli.model.parameters() if p.requires_grad),
        "total_params": sum(getattr(p, "ds_numel", p.numel()) for p in cli.model.parameters()),
    }
    if torch.cuda.is_available() and args.accelerator in ("gpu", "cuda"):
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
