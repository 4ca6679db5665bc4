"""DeepSpeed ZeRO for UniFashion: a strategy that also runs on CPU, trainable-only shards, one-file export.

`UniFashionDeepSpeedStrategy` is Lightning's `DeepSpeedStrategy` with three changes:

* **CPU.** Lightning refuses any accelerator but CUDA (`setup_environment`). DeepSpeed itself runs on
  CPU (`DS_ACCELERATOR=cpu`; communication through oneCCL when importable, gloo otherwise; its own CI
  uses a CPU torch wheel). With ``accelerator: cpu`` the strategy selects DeepSpeed's CPU accelerator,
  uses gloo, and skips DeepSpeed's shared-memory all-reduce kernel (a C++ op that takes ~160 s to
  compile on first use and only speeds up intra-node reductions; gloo does the same reductions).
  This is how the test suite runs the project's module through a real DeepSpeed engine; on GPUs the
  strategy is exactly Lightning's.
* **ZeRO-3 gathers.** ZeRO-3 gathers a submodule's parameters only around that submodule's own
  ``forward``. Three parameters are read outside any forward of their owner: the Q-Former query
  tokens (`Blip2ForImageTextRetrieval.query_tokens`, read by `MultimodalEncoder.encode_image` /
  `_joint`), the ITC temperature (`MultimodalEncoder.temp`) and the generator's learned null
  condition (`Generator.null_condition`). The strategy registers them as external parameters of the
  LightningModule, so they are gathered for the whole training / validation step
  (`zero3_external_parameters`). Outside a step (a callback, the API) parameters stay partitioned:
  read them inside ``deepspeed.zero.GatheredParameters``.
* **Checkpoints keep the trainable-only contract.** Lightning drops ``state_dict`` from a DeepSpeed
  checkpoint's client state, so `UniFashionModule.on_save_checkpoint` cannot shrink the shards. The
  strategy saves the shards with ``exclude_frozen_parameters=True`` (trainable parameters and their
  optimizer states) and puts the frozen weights that do *not* reload from a pretrained path (e.g. a
  Q-Former trained in phase 1, frozen in phase 1-generative) into the client state under
  `KEPT_FROZEN_KEY`, gathered to full tensors. `convert_deepspeed_checkpoint` turns the sharded
  directory into the single Lightning checkpoint file that ``model.init_from`` and
  `UniFashion.from_checkpoint` read.

ZeRO-3 limits (documented, not worked around): the module is built before DeepSpeed partitions it
(no ``deepspeed.zero.Init`` at construction: the UNet ``conv_in`` widening and ``init_from`` copy
full weights), so every rank holds the full model in host memory once at start-up; the in-place
clamp of the ITC temperature acts on the gathered copy only (the stored value is clamped at the
next read, which gives the same forward values; only a temperature outside [0.001, 0.5] behaves
differently from a plain run).

FSDP is not offered as a second sharding engine. Lightning's `FSDPStrategy` (FSDP1) needs CUDA; its
`ModelParallelStrategy` (FSDP2 ``fully_shard``, which accepts a CPU mesh with gloo) refuses a
LightningModule without a ``configure_model`` hook that applies the sharding itself, and
UniFashionModule builds and loads its parts in ``__init__`` (``init_from``, pretrained paths, UNet
widening). Offering it would mean a second construction path for the module plus a second
trainable-only checkpoint format (FSDP2 writes torch.distributed.checkpoint directories), for no
gain at paper size: ZeRO-3 already shards what FSDP2 would, and the planner (`unifashion.planning`)
puts phase1_generative's model states at ~4.8 GiB per GPU under ZeRO-3 on 8 GPUs (~35 GiB under DDP).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import nn

KEPT_FROZEN_KEY = "unifashion_kept_frozen"
"""Client-state key of a DeepSpeed checkpoint: frozen weights that must travel with the checkpoint."""

EXTERNAL_PARAMETERS = ("encoder.model.query_tokens", "encoder.temp", "generator.null_condition")
"""Parameters of UniFashionModule read outside their owner's forward (see the module docstring)."""


def use_deepspeed_cpu_accelerator() -> None:
    """Selects DeepSpeed's CPU accelerator (as ``DS_ACCELERATOR=cpu`` would) and skips its shm op.

    Safe to call more than once; must run before any DeepSpeed engine is built.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator, set_accelerator

    if get_accelerator().device_name() != "cpu":
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

        set_accelerator(CPU_Accelerator())
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # the shared-memory all-reduce kernel is a speed-up only; building it costs ~160 s of g++ per machine
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def zero3_external_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters of `EXTERNAL_PARAMETERS` that `module` has (submodules that are None are skipped)."""
    params = dict(module.named_parameters())
    return [(name, params[name]) for name in EXTERNAL_PARAMETERS if name in params]


def kept_frozen_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Frozen parameters that a trainable-only checkpoint must still carry, as full CPU tensors.

    A frozen parameter may be left out only when rebuilding the module reloads the same value from a
    pretrained path (`UniFashionModule.droppable_frozen_keys`); every other frozen parameter is kept.
    Under ZeRO-3 the values are gathered (collective: every rank must call this).
    """
    droppable = set(module.droppable_frozen_keys()) if hasattr(module, "droppable_frozen_keys") else set()
    wanted = [(n, p) for n, p in module.named_parameters() if not p.requires_grad and n not in droppable]
    if not wanted:
        return {}
    with _gathered([p for _, p in wanted]):
        return {n: p.detach().to("cpu", copy=True) for n, p in wanted}


@contextmanager
def _gathered(params: list[nn.Parameter]) -> Iterator[None]:
    """Gathers ZeRO-3 partitioned `params` for reading (a no-op for ordinary parameters)."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


@contextmanager
def _scalar_parameters_broadcastable() -> Iterator[None]:
    """Lets DeepSpeed's start-up broadcasts handle 0-dim parameters (the ITC temperature).

    DeepSpeed 0.19.8 broadcasts every parameter from rank 0 as ``p.data.view(torch.uint8)`` when an
    engine starts (`DeepSpeedEngine._broadcast_model`, and ZeRO-3's `Init._zero_init_param`), which
    raises "self.dim() cannot be 0 to view Float as Byte" for a 0-dim parameter, on GPUs as on CPU.
    While `deepspeed.initialize` runs, both broadcast a 0-dim parameter through a 1-element view of
    the same storage; the parameter keeps its shape.
    """
    import deepspeed.comm as ds_dist
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.partition_parameters import Init

    broadcast_model, zero_init_param = DeepSpeedEngine._broadcast_model, Init._zero_init_param

    def patched_broadcast_model(engine: DeepSpeedEngine) -> None:
        scalars = [p for p in engine.module.parameters() if p.dim() == 0 and not hasattr(p, "ds_id")]
        for p in scalars:
            p.data = p.data.reshape(1)
        try:
            broadcast_model(engine)
        finally:
            for p in scalars:
                p.data = p.data.reshape(())

    def patched_zero_init_param(init: Init, param: nn.Parameter) -> None:
        if param.dim() != 0:
            return zero_init_param(init, param)
        init._convert_to_deepspeed_param(param)
        group = init.get_partition_dp_group(param)
        src = 0 if ds_dist.get_world_group() == group else ds_dist.get_global_rank(group, 0)
        ds_dist.broadcast(param.data.reshape(1).view(torch.uint8), src, group)
        param.partition()

    DeepSpeedEngine._broadcast_model, Init._zero_init_param = patched_broadcast_model, patched_zero_init_param
    try:
        yield
    finally:
        DeepSpeedEngine._broadcast_model, Init._zero_init_param = broadcast_model, zero_init_param


class UniFashionDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy, also on CPU, with trainable-only checkpoints (module docstring).

    Takes every argument of `lightning.pytorch.strategies.DeepSpeedStrategy`;
    ``exclude_frozen_parameters`` defaults to True here (frozen weights that must travel with the
    checkpoint go to its client state instead, see `kept_frozen_state`).
    """

    def __init__(self, *args: Any, exclude_frozen_parameters: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        zero = (self.config or {}).get("zero_optimization") or {}
        if zero.get("offload_optimizer"):
            # the optimizer is configure_optimizers' torch AdamW (DeepSpeed's client optimizer); DeepSpeed
            # refuses a client optimizer under ZeRO-Offload unless told that this is intended (its CPUAdam
            # is faster but needs a C++ op built on the machine)
            self.config.setdefault("zero_force_ds_cpu_optimizer", False)

    # ------------------------------------------------------------------ set-up
    def setup_environment(self) -> None:
        if isinstance(self.accelerator, CPUAccelerator):
            use_deepspeed_cpu_accelerator()
            DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA-only check
        else:
            super().setup_environment()

    def setup_distributed(self) -> None:
        if not isinstance(self.accelerator, CPUAccelerator):
            return super().setup_distributed()
        from lightning.fabric.utilities.seed import reset_seed

        # CPU devices have no index, so Lightning's GPU-index check does not apply
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _get_process_group_backend(self) -> str:
        if isinstance(self.accelerator, CPUAccelerator):
            return self._process_group_backend or "gloo"
        return super()._get_process_group_backend()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        if self.zero_stage_3:
            for _, param in zero3_external_parameters(model):
                deepspeed.zero.register_external_parameter(model, param)
        # Lightning passes the CUDA index as DeepSpeed's device rank; a CPU device has none (DeepSpeed
        # would then assume a single process), so the local rank is passed instead
        device_rank = self.root_device.index if self.root_device.index is not None else self.local_rank
        with _scalar_parameters_broadcastable():
            engine, ds_optimizer, _, _ = deepspeed.initialize(
                args=argparse.Namespace(device_rank=device_rank),
                config=self.config,
                model=model,
                model_parameters=[p for p in model.parameters() if p.requires_grad],
                optimizer=optimizer,
                lr_scheduler=lr_scheduler,
                dist_init_required=False,
            )
        return engine, ds_optimizer

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Any | None = None) -> None:
        kept = kept_frozen_state(self.lightning_module) if self.exclude_frozen_parameters else {}
        super().save_checkpoint({**checkpoint, KEPT_FROZEN_KEY: kept}, filepath, storage_options)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        if self.load_full_weights and self.zero_stage_3:
            return super().load_checkpoint(checkpoint_path, weights_only)
        from lightning.pytorch.strategies.deepspeed import _validate_checkpoint_directory
        from lightning.pytorch.trainer.states import TrainerFn

        _validate_checkpoint_directory(checkpoint_path)
        module = self.lightning_module
        is_fitting = module.trainer.state.fn == TrainerFn.FITTING
        # the shards hold the trainable parameters only: the module load cannot be strict here; the
        # kept frozen weights are loaded below and the rest were rebuilt from their pretrained paths
        _, client_state = self.deepspeed_engine.load_checkpoint(
            checkpoint_path,
            load_optimizer_states=is_fitting,
            load_lr_scheduler_states=False,
            load_module_strict=not self.exclude_frozen_parameters and module.strict_loading,
        )
        if client_state is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint directory {checkpoint_path}")
        kept = client_state.pop(KEPT_FROZEN_KEY, {}) or {}
        params = dict(module.named_parameters())
        unknown = sorted(set(kept) - set(params))
        if unknown:
            raise ValueError(f"{checkpoint_path}: kept frozen weights unknown to this model: {unknown[:10]}")
        targets = [params[n] for n in kept]
        if targets:
            import deepspeed

            with deepspeed.zero.GatheredParameters(targets, modifier_rank=0, enabled=self.zero_stage_3), \
                    torch.no_grad():
                for name, value in kept.items():
                    params[name].copy_(value)
        return client_state


def convert_deepspeed_checkpoint(checkpoint_dir: str | os.PathLike, output_file: str | os.PathLike,
                                 tag: str | None = None) -> dict[str, Any]:
    """Writes a sharded DeepSpeed checkpoint directory as one Lightning checkpoint file.

    The output has ``state_dict`` (the fp32 trainable parameters merged from the ZeRO shards, plus the
    kept frozen weights of the client state) and the Lightning client state (``hyper_parameters``,
    ``epoch``, ``global_step``, loops, callbacks, `UniFashionModule`'s chain record). It is what
    ``model.init_from``, ``unifashion fit --ckpt_path`` of a non-DeepSpeed run (weights only) and
    `UniFashion.from_checkpoint` read. Frozen pretrained weights are not in it: they reload from
    their pretrained paths, as for every trainable-only checkpoint.

    Args:
        checkpoint_dir: the directory Lightning's ModelCheckpoint wrote (e.g. ``.../last.ckpt/``).
        output_file: the file to write.
        tag: the DeepSpeed tag inside the directory (default: the one named by its ``latest`` file).

    Returns:
        the checkpoint dictionary written.
    """
    from deepspeed.utils.zero_to_fp32 import (
        get_fp32_state_dict_from_zero_checkpoint,
        get_model_state_file,
        get_optim_files,
    )

    root = Path(checkpoint_dir)
    if not (root / "latest").is_file() and tag is None:
        raise FileNotFoundError(
            f"{root} is not a DeepSpeed checkpoint directory (no 'latest' file naming its tag)"
        )
    tag = tag or (root / "latest").read_text().strip()
    shard_dir = root / tag
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(root), tag, exclude_frozen_parameters=True)
    optim = torch.load(get_optim_files(str(shard_dir))[0], map_location="cpu", weights_only=False)
    stage = optim["optimizer_state_dict"]["zero_stage"]
    client = torch.load(get_model_state_file(str(shard_dir), stage), map_location="cpu", weights_only=False)
    ds_keys = {"module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
               "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
               "skipped_steps", "global_steps", "global_samples", "dp_world_size", "mp_world_size",
               "ds_config", "ds_version", "csr_tensor_module_names"}
    out = {k: v for k, v in client.items() if k not in ds_keys}
    kept = out.pop(KEPT_FROZEN_KEY, {}) or {}
    overlap = sorted(set(kept) & set(state_dict))
    if overlap:
        raise ValueError(f"{root}: weights both trainable and kept frozen: {overlap[:10]}")
    # DeepSpeed's merge: the fp32 master weights of the trainable parameters, and the buffers
    merged = {**{k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, **kept}
    out["state_dict"] = {k.removeprefix("_forward_module."): v for k, v in merged.items()}
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, output_file)
    return out
