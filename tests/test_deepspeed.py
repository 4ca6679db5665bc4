"""DeepSpeed ZeRO through Lightning on CPU (`unifashion.strategies`): a ZeRO-2 / ZeRO-3 step equals the
plain step, checkpoints keep the trainable-only contract, and a sharded checkpoint converts to the one
file `init_from` reads.

How the equality can hold: every random draw of a step comes from the global torch RNG, which a
callback reseeds at the start of every batch on both sides (ITM negatives, diffusion noise and
timesteps, condition dropout); both sides start from the same seeded weights and see the same batch.
AdamW runs with eps=1, so an update is proportional to the gradient (with eps ~0, Adam's first update
is lr * sign(g) and a gradient difference could hide). In the 2-process test both ranks see the same
batch, so the averaged gradient is the single-process gradient, and ZeRO-3 really shards the
parameters over the two ranks; the phase used there (phase1_generative: frozen encoder, LLM + LoRA,
UNet) has no cross-process gather in its losses. ZeRO-3 reads the query tokens and the null
condition outside their owner's forward: the strategy registers them (tested by running at all).

Cost on the 2-core CPU: each DeepSpeed engine start ~5-15 s; the file ~3-4 min (slow).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from tiny import tiny_encoder_config

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
OVERLAYS = {"zero2.yaml": (2, False, False), "zero3.yaml": (3, False, False), "zero3_offload.yaml": (3, True, True)}
CORPUS = ["blue jeans", "red dress", "wool coat", "white shirt", "striped cotton shirt", "black leather belt"]
GEN = dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8, block_out_channels=(16, 32),
           attention_from_block=0, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
           num_train_timesteps=100, guidance_scale=2.0, cond_dropout=0.3)
TOL = 1e-5


# ---------------------------------------------------------------------------------------- fast


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_builds_the_strategy_it_says(name):
    """Each overlay names UniFashionDeepSpeedStrategy with its stage and offloads, and builds."""
    from lightning.pytorch.cli import LightningCLI  # noqa: F401  (jsonargparse import path)

    from unifashion.strategies import UniFashionDeepSpeedStrategy

    cfg = yaml.safe_load((CONFIGS / "deepspeed" / name).read_text())
    strategy = cfg["trainer"]["strategy"]
    assert strategy["class_path"] == "unifashion.strategies.UniFashionDeepSpeedStrategy"
    built = UniFashionDeepSpeedStrategy(**strategy["init_args"])
    stage, offload_opt, offload_param = OVERLAYS[name]
    zero = built.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload_opt and ("offload_param" in zero) == offload_param
    assert built.exclude_frozen_parameters


@pytest.mark.parametrize("phase_config", ["phase1_retrieval.yaml", "phase1_captioning.yaml",
                                          "phase1_generative.yaml", "phase1_image_generation.yaml",
                                          "finetune_tryon.yaml", "finetune_design.yaml", "phase2.yaml"])
@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_composes_with_phase_configs(phase_config, name):
    """`unifashion fit --config <phase> --config deepspeed/<zero>` parses; the phase's model is kept."""
    from test_configs import parse

    config = parse(CONFIGS / phase_config, CONFIGS / "deepspeed" / name)
    assert "UniFashionDeepSpeedStrategy" in str(config.trainer.strategy)
    assert config.model.phase == yaml.safe_load((CONFIGS / phase_config).read_text())["model"]["phase"]


def test_cpu_accelerator_selection_skips_the_shm_kernel():
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    from unifashion.strategies import use_deepspeed_cpu_accelerator

    use_deepspeed_cpu_accelerator()
    assert get_accelerator().device_name() == "cpu"
    assert get_accelerator().communication_backend_name() in ("gloo", "ccl")
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False


# ---------------------------------------------------------------------------------------- set-up


def _assets(root: Path) -> dict[str, str]:
    from unifashion.models.instructions import INSTRUCTIONS
    from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

    corpus = CORPUS + ["USER: <Img> </Img> Assistant:"] + [s for v in INSTRUCTIONS.values() for s in v]
    if not (root / "qtok").is_dir():
        train_wordpiece_tokenizer(corpus * 3, root / "qtok", vocab_size=200)
        train_bpe_tokenizer(corpus * 3, root / "ltok", vocab_size=300)
    return {k: str(root / k) for k in ("qtok", "ltok")}


def _module(phase: str, a: dict[str, str]):
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.module import UniFashionModule
    from unifashion.optim import OptimizerConfig

    enc = tiny_encoder_config(Path(a["qtok"]), qformer_dropout=0.0)
    opt = OptimizerConfig(lr=1e-2, eps=1.0, weight_decay=0.01, schedule="constant")
    kwargs: dict = dict(phase=phase, optimizer=opt)
    if phase == "phase1_generative":
        kwargs |= dict(
            captioner=CaptionerConfig(tokenizer=a["ltok"], hidden_size=32, num_layers=1, num_heads=2,
                                      intermediate_size=64, max_position_embeddings=128, lora_rank=4, lora_alpha=8,
                                      lora_dropout=0.0, max_caption_tokens=16),
            generator=GEN,
        )
    L.seed_everything(0)
    return UniFashionModule(enc, **kwargs)


def _batch(module, n: int = 4) -> dict:
    texts = CORPUS[:n]
    g = torch.Generator().manual_seed(1)
    size = module.encoder.config.image_size
    return {"kind": "pairs", "dataset": "fashiongen", "image": torch.randn(n, 3, size, size, generator=g),
            "text": texts, "product_id": torch.arange(n), **module.encoder.tokenize(texts)}


class _Reseed(L.Callback):
    """Reseeds the global RNG before every batch (module docstring)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(1234 + batch_idx)


def _trainer(root: str, strategy="auto", devices: int = 1, steps: int = 1, ckpt: bool = False) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=steps, precision="32-true",
                     limit_val_batches=0, logger=False, enable_checkpointing=ckpt, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=root, callbacks=[_Reseed()],
                     use_distributed_sampler=False, num_sanity_val_steps=0)


def _loader(batch: dict, steps: int = 1):
    return torch.utils.data.DataLoader([batch] * steps, batch_size=None)


def _strategy(stage: int, **kw):
    from unifashion.strategies import UniFashionDeepSpeedStrategy

    # overlap_comm needs accelerator streams; on CPU it only adds copies
    return UniFashionDeepSpeedStrategy(stage=stage, logging_batch_size_per_gpu=4, overlap_comm=False, **kw)


def _full_weights(module) -> dict[str, torch.Tensor]:
    import deepspeed

    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=any(hasattr(p, "ds_id") for p in params)):
        return {n: p.detach().clone() for n, p in module.named_parameters()}


def _plain_step(phase: str, a: dict[str, str], steps: int = 1) -> tuple[float, dict[str, torch.Tensor]]:
    module = _module(phase, a)
    batch = _batch(module)
    trainer = _trainer(os.devnull, steps=steps)
    trainer.fit(module, _loader(batch, steps))
    return float(trainer.callback_metrics["train/loss"]), {n: p.detach().clone() for n, p in module.named_parameters()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------- 1 process


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_step_equals_plain_step_and_checkpoint_round_trips(stage, tmp_path_factory, monkeypatch):
    """phase1_retrieval (ITC + ITM, the temperature, the query tokens): ZeRO-`stage` step == plain step;
    the sharded checkpoint holds trainable parameters only, converts to one file, and that file
    reloads into UniFashionModule (init_from and load_from_checkpoint) with the trained weights."""
    from unifashion.module import UniFashionModule
    from unifashion.strategies import convert_deepspeed_checkpoint

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    a = _assets(tmp_path_factory.mktemp("assets"))
    tmp = tmp_path_factory.mktemp(f"zero{stage}")
    ref_loss, ref = _plain_step("phase1_retrieval", a)

    module = _module("phase1_retrieval", a)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = _trainer(str(tmp), strategy=_strategy(stage))
    trainer.fit(module, _loader(_batch(module)))
    got = _full_weights(module)
    trainable = sorted(n for n, p in module.named_parameters() if p.requires_grad)
    assert abs(float(trainer.callback_metrics["train/loss"]) - ref_loss) < TOL
    assert max((got[n] - ref[n]).abs().max().item() for n in trainable) < TOL
    assert min((got[n] - before[n]).abs().max().item() for n in ("encoder.temp", "encoder.model.query_tokens")) > 0

    ckpt_dir = tmp / "step.ckpt"
    trainer.save_checkpoint(ckpt_dir)
    (model_file,) = (ckpt_dir / "checkpoint").glob("*model_states.pt")
    shard = torch.load(model_file, map_location="cpu", weights_only=False)
    params = {n for n, _ in module.named_parameters()}
    assert {k for k in shard["module"] if k in params} <= set(trainable)  # exclude_frozen_parameters
    assert not shard.get("frozen_param_shapes")
    out = tmp / "step.pt"
    converted = convert_deepspeed_checkpoint(ckpt_dir, out)
    assert set(trainable) <= set(converted["state_dict"])
    for n in trainable:
        torch.testing.assert_close(converted["state_dict"][n], got[n], rtol=0, atol=0)
    assert converted["hyper_parameters"]["phase"] == "phase1_retrieval"

    reloaded = UniFashionModule.load_from_checkpoint(out, map_location="cpu", weights_only=True)
    for n, p in reloaded.named_parameters():
        torch.testing.assert_close(p.detach(), got[n], rtol=0, atol=0)
    L.seed_everything(0)
    follower = _module("phase1_retrieval", a)
    follower.load_weights(out)
    for n in trainable:
        torch.testing.assert_close(dict(follower.named_parameters())[n].detach(), got[n], rtol=0, atol=0)

    if stage == 2:  # resume through the strategy: the engine restores the shards, the step counter moves on
        resumed = _module("phase1_retrieval", a)
        trainer = _trainer(str(tmp), strategy=_strategy(stage), steps=1)
        trainer.fit(resumed, _loader(_batch(resumed)), ckpt_path=str(ckpt_dir))
        assert trainer.global_step == 1
        for n, p in resumed.named_parameters():
            torch.testing.assert_close(p.detach(), got[n], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- 2 processes


def _worker(rank: int, port: int, out: str, a: dict[str, str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    from unifashion.strategies import convert_deepspeed_checkpoint

    for stage in (2, 3):
        module = _module("phase1_generative", a)
        trainer = _trainer(f"{out}/z{stage}", strategy=_strategy(stage), devices=2)
        trainer.fit(module, _loader(_batch(module)))
        weights = _full_weights(module)  # collective under ZeRO-3
        shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
        trainer.save_checkpoint(f"{out}/z{stage}/step.ckpt")
        if rank == 0:
            convert_deepspeed_checkpoint(f"{out}/z{stage}/step.ckpt", f"{out}/z{stage}/step.pt")
            torch.save({"loss": float(trainer.callback_metrics["train/loss"]), "weights": weights,
                        "local_shapes": shapes, "world": trainer.world_size}, f"{out}/z{stage}/result.pt")
        trainer.strategy.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_zero_on_two_processes_equals_plain_step(tmp_path_factory):
    """phase1_generative (frozen encoder, LLM + LoRA + text TSA, UNet + image TSA + null condition) on 2
    processes: the ZeRO-2 and ZeRO-3 step equal the plain step; ZeRO-3 really partitions the
    parameters; the kept frozen encoder (not reloadable: built from config) survives the conversion."""
    from unifashion.module import UniFashionModule

    a = _assets(tmp_path_factory.mktemp("assets2"))
    out = tmp_path_factory.mktemp("zero_2proc")
    mp.spawn(_worker, args=(_free_port(), str(out), a), nprocs=2, join=True)
    ref_loss, ref = _plain_step("phase1_generative", a)
    plain = _module("phase1_generative", a)  # the initial weights
    init = {n: p.detach().clone() for n, p in plain.named_parameters()}
    trainable = sorted(n for n, p in plain.named_parameters() if p.requires_grad)
    frozen = sorted(n for n, p in plain.named_parameters() if not p.requires_grad)
    assert any(n.startswith("captioner.language_model.") and "lora_" in n for n in trainable)
    for stage in (2, 3):
        result = torch.load(out / f"z{stage}" / "result.pt", weights_only=False)
        assert result["world"] == 2
        assert abs(result["loss"] - ref_loss) < TOL, stage
        diff = max((result["weights"][n] - ref[n]).abs().max().item() for n in trainable)
        assert diff < TOL, (stage, diff)
        assert max((result["weights"][n] - init[n]).abs().max().item() for n in trainable) > 1e-4  # it trained
        assert all(torch.equal(result["weights"][n], init[n]) for n in frozen)
        if stage == 3:  # outside a gather, a rank holds an empty placeholder of every parameter
            assert all(s == (0,) for s in result["local_shapes"].values())
        converted = torch.load(out / f"z{stage}" / "step.pt", weights_only=True)
        for n in trainable + frozen:  # the tiny encoder/LLM are built from config: nothing may be dropped
            torch.testing.assert_close(converted["state_dict"][n], result["weights"][n], rtol=0, atol=0)
        reloaded = UniFashionModule.load_from_checkpoint(out / f"z{stage}" / "step.pt", map_location="cpu")
        for n, p in reloaded.named_parameters():
            torch.testing.assert_close(p.detach(), result["weights"][n], rtol=0, atol=0)
