"""Memory planner: parameters per submodule and group, and model-state memory per GPU for each ZeRO stage.

`plan(configs, gpus)` reads phase (and strategy) YAML files the way ``unifashion fit --config A
--config B`` merges them, counts every parameter group of the phase's submodules without loading any
weight, and estimates the memory of the model states (parameters, gradients, optimizer states) per
GPU and per node's CPU with DeepSpeed's own estimators. ``unifashion plan`` prints `format_plan`.

Counting: each HF / diffusers model is built on the ``meta`` device from its config (no memory, no
weights): the config is read from the configured directory when it exists, else (paper-size configs
point at directories that may not be there yet) from the published hyper-parameters of the model
the paper uses (`KNOWN`): BLIP-2 ViT-g + Q-Former (``Salesforce/blip2-itm-vit-g``), Vicuna-1.5-7B
(LlamaConfig 4096 x 32 layers, MLP 11008), Stable Diffusion 1.4 UNet and VAE. The output says which
source each part came from. LoRA adapters are counted from the LLM's linear layers (r x (in + out)
per adapted layer), the task-specific adapters from their shapes.

Estimates (model states only; activations, the CUDA context and fragmentation come on top):

* ``ddp``: every GPU holds everything. Lightning's bf16-mixed keeps fp32 weights, so 16 B per trainable
  parameter (fp32 weight, gradient, two Adam moments) and 4 B per frozen one (2 B for an LLM loaded with
  ``torch_dtype: bfloat16``).
* ``zero2`` / ``zero2_offload``: `deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs`
  on the trainable parameters, plus the frozen parameters in 16 bit (DeepSpeed casts the module),
  replicated on every GPU.
* ``zero3`` / ``zero3_offload_opt`` / ``zero3_offload_all``:
  `deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs` on the trainable parameters
  (largest layer = the largest single module's parameters), plus the frozen parameters in 16 bit
  divided over the GPUs (on the CPU when parameters are offloaded).

DeepSpeed's estimators assume every parameter trains (they are called on the trainable count here, the
frozen weights are added by the rule above) and ``zero_init`` (the model built under
``deepspeed.zero.Init``); UniFashion builds its model before DeepSpeed partitions it, so at start-up
every rank holds one full copy in host memory (the ``host_at_start`` line).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from unifashion.phases import get_phase

GIB = 1024**3

KNOWN: dict[str, dict[str, Any]] = {
    "blip2-itm-vit-g": {
        "vision_config": dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                              image_size=224, patch_size=14, qkv_bias=True),
        "qformer_config": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                               cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30523,
                               max_position_embeddings=512, use_qformer_text_input=True),
        "num_query_tokens": 32,
        "image_text_hidden_size": 256,
    },
    "vicuna-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
                      tie_word_embeddings=False),
    "sd-1.4-unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                        block_out_channels=(320, 640, 1280, 1280),
                        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                        cross_attention_dim=768, attention_head_dim=8),
    "sd-1.4-vae": dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                       up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                       layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512),
}
"""Published hyper-parameters of the paper's pretrained models, used when a configured directory is absent."""

BERT_VOCAB = 30523
"""Q-Former vocabulary (BERT base uncased + the [DEC] token) when a fresh encoder's tokenizer is absent."""


# ---------------------------------------------------------------------------------------- results


@dataclass
class PartCount:
    """Parameters of one submodule.

    Attributes:
        name: "encoder", "captioner" or "generator".
        source: where its architecture came from (a directory, a known published config, the config fields).
        groups: parameter group (phases.py names; "<part>_frozen" for what no group holds) -> count.
        frozen_bytes_per_param: storage of a frozen parameter under DDP (4 fp32, 2 for a bf16 LLM).
        largest_layer: parameters of the largest single module (ZeRO-3 gathers one at a time).
    """

    name: str
    source: str
    groups: dict[str, int]
    frozen_bytes_per_param: dict[str, int] = field(default_factory=dict)
    largest_layer: int = 0


@dataclass
class Plan:
    """The planner's result (see the module docstring).

    Attributes:
        phase: the phase of the config.
        gpus: GPUs per node; nodes: number of nodes.
        parts: the submodules' counts.
        trainable_groups: the groups this phase trains.
        strategy: the stage named by the strategy config ("ddp", "zero2", ...), or None.
        estimates: stage -> {"gpu": bytes per GPU, "cpu": bytes per node's CPU}.
        notes: remarks printed under the table.
    """

    phase: str
    gpus: int
    nodes: int
    parts: list[PartCount]
    trainable_groups: tuple[str, ...]
    strategy: str | None
    estimates: dict[str, dict[str, int]]
    notes: list[str]

    @property
    def total(self) -> int:
        return sum(sum(p.groups.values()) for p in self.parts)

    @property
    def trainable(self) -> int:
        return sum(n for p in self.parts for g, n in p.groups.items() if g in self.trainable_groups)

    def part_totals(self, name: str) -> tuple[int, int]:
        """(total, trainable) parameters of part `name`."""
        part = next(p for p in self.parts if p.name == name)
        return sum(part.groups.values()), sum(n for g, n in part.groups.items() if g in self.trainable_groups)


# ---------------------------------------------------------------------------------------- configs


def merge_configs(paths: Sequence[str | Path]) -> dict[str, Any]:
    """YAML files merged like ``--config A --config B`` (later files override, mappings merge)."""

    def merge(a: dict, b: Mapping) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
        return out

    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        merged = merge(merged, data)
    return merged


def strategy_stage(trainer: Mapping[str, Any]) -> str | None:
    """The stage the trainer's strategy names: "ddp", "zero2", "zero3", "zero3_offload_opt", ..."""
    strategy = trainer.get("strategy")
    if strategy is None:
        return None
    if isinstance(strategy, str):
        return {"ddp": "ddp", "deepspeed_stage_2": "zero2", "deepspeed_stage_2_offload": "zero2_offload",
                "deepspeed_stage_3": "zero3", "deepspeed_stage_3_offload": "zero3_offload_all"}.get(strategy)
    if "DeepSpeed" not in str(strategy.get("class_path", "")):
        return None
    args = strategy.get("init_args") or {}
    stage = int(args.get("stage", 2))
    if stage == 3:
        if args.get("offload_parameters"):
            return "zero3_offload_all"
        return "zero3_offload_opt" if args.get("offload_optimizer") else "zero3"
    return f"zero{stage}_offload" if args.get("offload_optimizer") and stage == 2 else f"zero{stage}"


# ---------------------------------------------------------------------------------------- counting


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def _largest_layer(module: nn.Module) -> int:
    return max((_numel(m.parameters(recurse=False)) for m in module.modules()), default=0)


def _dir(path: str | None, sub: str | None = None) -> Path | None:
    """The local directory holding `path`'s config (`path/sub` or `path`), or None."""
    if path is None:
        return None
    root = Path(path).expanduser()
    for candidate in ([root / sub] if sub else []) + [root]:
        if (candidate / "config.json").is_file():
            return candidate
    return None


def count_encoder(enc: Mapping[str, Any]) -> PartCount:
    """Parameter groups of the multimodal encoder (model.encoder)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    from unifashion.models.encoder import EncoderConfig

    cfg = EncoderConfig(**{k: v for k, v in enc.items() if k != "tokenizer"}, tokenizer=enc.get("tokenizer"))
    pretrained = cfg.pretrained
    local = _dir(pretrained)
    if local is not None:
        hf = Blip2Config.from_pretrained(str(local))
        hf.qformer_config.use_qformer_text_input = True
        source = str(local)
    elif pretrained is not None:
        hf = Blip2Config(**KNOWN["blip2-itm-vit-g"])
        source = f"known config of Salesforce/blip2-itm-vit-g ({pretrained} not found)"
    else:
        vocab, vocab_note = BERT_VOCAB, f"vocabulary {BERT_VOCAB} assumed: tokenizer {cfg.tokenizer} not found"
        if cfg.tokenizer and Path(cfg.tokenizer).is_dir():
            from transformers import AutoTokenizer

            vocab, vocab_note = len(AutoTokenizer.from_pretrained(cfg.tokenizer)), f"tokenizer {cfg.tokenizer}"
        from unifashion.models.encoder import MultimodalEncoder

        tokenizer = type("Vocab", (), {"__len__": lambda self: vocab, "pad_token_id": 0})()
        hf = MultimodalEncoder._fresh_hf_config(cfg, tokenizer)
        source = f"config fields ({vocab_note})"
    with torch.device("meta"):
        model = Blip2ForImageTextRetrieval(hf)
    groups = {
        "vision": _numel(model.vision_model.parameters()),
        "qformer": model.query_tokens.numel() + _numel(model.embeddings.parameters()) + _numel(model.qformer.parameters()),
        "projections": _numel(model.vision_projection.parameters()) + _numel(model.text_projection.parameters()),
        "itm_head": _numel(model.itm_head.parameters()),
        "temperature": 1,
    }
    rest = _numel(model.parameters()) - sum(groups.values()) + 1  # e.g. an unused language model
    if rest:
        groups["encoder_frozen"] = rest
    return PartCount("encoder", source, groups, largest_layer=_largest_layer(model))


def _lora_count(model: nn.Module, rank: int, targets: str | Sequence[str]) -> int:
    """LoRA parameters peft adds: r x (in + out) per adapted linear layer ("all-linear": all but lm_head)."""
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if targets == "all-linear":
            hit = not name.endswith("lm_head")
        else:
            names = [targets] if isinstance(targets, str) else list(targets)
            hit = any(name == t or name.endswith("." + t) for t in names)
        if hit:
            total += rank * (module.in_features + module.out_features)
    return total


def count_captioner(cap: Mapping[str, Any], query_dim: int) -> PartCount:
    """Parameter groups of the caption branch (model.captioner)."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from unifashion.models.captioner import CaptionerConfig

    cfg = CaptionerConfig(**cap)
    local = _dir(cfg.llm)
    if local is not None:
        hf = AutoConfig.from_pretrained(str(local))
        source = str(local)
    elif cfg.llm is not None:
        hf = LlamaConfig(**KNOWN["vicuna-7b"])
        source = f"known config of Vicuna-1.5-7B ({cfg.llm} not found)"
    else:
        vocab = None
        if cfg.tokenizer and Path(cfg.tokenizer).is_dir():
            from transformers import AutoTokenizer

            vocab = len(AutoTokenizer.from_pretrained(cfg.tokenizer))
        if vocab is None:
            raise FileNotFoundError(f"captioner.tokenizer {cfg.tokenizer!r} not found: it sizes the tiny LLM's vocabulary")
        hf = LlamaConfig(vocab_size=vocab, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
                         intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                         tie_word_embeddings=False)
        source = f"config fields (tokenizer {cfg.tokenizer})"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    embed = model.get_input_embeddings().embedding_dim
    groups = {
        "text_adapter": query_dim * embed + embed,
        "lora": _lora_count(model, cfg.lora_rank, cfg.lora_target_modules) if cfg.use_lora else 0,
        "captioner_frozen": _numel(model.parameters()),
    }
    dtype_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[cfg.torch_dtype]
    return PartCount("captioner", source, groups, {"captioner_frozen": dtype_bytes}, _largest_layer(model))


def count_generator(gen: Mapping[str, Any], query_dim: int) -> PartCount:
    """Parameter groups of the image generation branch (model.generator), conv_in widened per variant."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from unifashion.models.generator import (
        PIXEL_CHANNELS,
        GeneratorConfig,
        _tiny_unet,
        _tiny_vae,
        variant_extra_channels,
    )

    cfg = GeneratorConfig(**gen)
    sources = []
    unet_src = cfg.unet or cfg.pretrained
    with torch.device("meta"):
        local = _dir(unet_src, "unet")
        if local is not None:
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(local)))
            sources.append(f"UNet {local}")
        elif unet_src is not None:
            unet = UNet2DConditionModel(**KNOWN["sd-1.4-unet"])
            sources.append(f"UNet: known config of Stable Diffusion 1.4 ({unet_src} not found)")
        else:
            unet = _tiny_unet(cfg, PIXEL_CHANNELS if cfg.pixel_space else cfg.latent_channels)
            sources.append("UNet: config fields")
        vae = None
        if not cfg.pixel_space:
            vae_src = cfg.vae or cfg.pretrained
            local = _dir(vae_src, "vae")
            if local is not None:
                vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(local)))
                sources.append(f"VAE {local}")
            elif vae_src is not None:
                vae = AutoencoderKL(**KNOWN["sd-1.4-vae"])
                sources.append(f"VAE: known config of Stable Diffusion 1.4 ({vae_src} not found)")
            else:
                vae = _tiny_vae(cfg)
                sources.append("VAE: config fields")
    latent = unet.config.out_channels
    conv = unet.conv_in
    in_channels = latent + variant_extra_channels(cfg.variant, latent)
    conv_in = conv.out_channels * in_channels * conv.kernel_size[0] * conv.kernel_size[1] + conv.out_channels
    cross = unet.config.cross_attention_dim
    groups = {
        "image_adapter": query_dim * cross + cross + cfg.num_queries * cross,
        "unet_input": conv_in,
        "unet": _numel(unet.parameters()) - _numel(conv.parameters()),
    }
    if vae is not None:
        groups["generator_frozen"] = _numel(vae.parameters())
    return PartCount("generator", "; ".join(sources), groups, largest_layer=_largest_layer(unet))


# ---------------------------------------------------------------------------------------- estimates


def estimate(parts: Sequence[PartCount], trainable_groups: Sequence[str], gpus: int, nodes: int = 1) -> dict[str, dict[str, int]]:
    """Model-state bytes per GPU and per node's CPU for each stage (module docstring)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    trains = set(trainable_groups)
    trainable = sum(n for p in parts for g, n in p.groups.items() if g in trains)
    frozen = sum(n for p in parts for g, n in p.groups.items() if g not in trains)
    frozen_ddp = sum(n * p.frozen_bytes_per_param.get(g, 4) for p in parts for g, n in p.groups.items() if g not in trains)
    largest = max((p.largest_layer for p in parts), default=0)
    total_gpus = gpus * nodes
    out = {"ddp": {"gpu": 16 * trainable + frozen_ddp, "cpu": 0}}
    for name, offload in (("zero2", False), ("zero2_offload", True)):
        cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, gpus, nodes, cpu_offload=offload)
        out[name] = {"gpu": int(gpu + 2 * frozen), "cpu": int(cpu)}
    for name, offload_opt, offload_params in (("zero3", False, False), ("zero3_offload_opt", True, False),
                                              ("zero3_offload_all", True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, largest, gpus, nodes, cpu_offload=offload_opt,
                                                            cpu_offload_params=offload_params)
        frozen_share = 2 * frozen // total_gpus
        if offload_params:
            out[name] = {"gpu": int(gpu), "cpu": int(cpu + frozen_share * gpus)}
        else:
            out[name] = {"gpu": int(gpu + frozen_share), "cpu": int(cpu)}
    return out


def plan(configs: Sequence[str | Path], gpus: int, nodes: int = 1) -> Plan:
    """Counts and estimates for the merged `configs` on `nodes` x `gpus` GPUs (module docstring)."""
    if gpus < 1 or nodes < 1:
        raise ValueError(f"gpus and nodes must be >= 1, got gpus={gpus}, nodes={nodes}")
    merged = merge_configs(configs)
    model = merged.get("model") or {}
    if "encoder" not in model:
        raise ValueError(f"{list(map(str, configs))}: no model.encoder section (pass a phase config first)")
    phase = get_phase(model.get("phase", "phase1_retrieval"))
    encoder = count_encoder(model["encoder"])
    parts = [encoder]
    qdim = _qformer_width(model["encoder"], encoder)
    notes: list[str] = []
    for need, counter in (("captioner", count_captioner), ("generator", count_generator)):
        section = model.get(need)
        if section is not None:
            parts.append(counter(section, qdim))
        elif need in phase.needs:
            raise ValueError(f"phase {phase.name!r} needs model.{need}, which the configs do not set")
    freeze_vision = model["encoder"].get("freeze_vision", True)
    trains = tuple(g for g in phase.trains if not (freeze_vision and g == "vision"))
    stage = strategy_stage(merged.get("trainer") or {})
    estimates = estimate(parts, trains, gpus, nodes)
    total_bytes = sum(n * p.frozen_bytes_per_param.get(g, 4) for p in parts for g, n in p.groups.items())
    notes.append(f"host_at_start: {total_bytes / GIB:.1f} GiB per rank (the model is built whole before "
                 "DeepSpeed partitions it)")
    notes.append("model states only: activations (batch size, resolution, gradient checkpointing) come on top")
    return Plan(phase.name, gpus, nodes, parts, trains, stage, estimates, notes)


def _qformer_width(enc: Mapping[str, Any], part: PartCount) -> int:
    """H_q, the width of the query outputs (768 for BLIP-2; the config field for a fresh encoder)."""
    local = _dir(enc.get("pretrained"))
    if local is not None:
        return int(json.loads((local / "config.json").read_text())["qformer_config"]["hidden_size"])
    if enc.get("pretrained") is not None:
        return KNOWN["blip2-itm-vit-g"]["qformer_config"]["hidden_size"]
    return int(enc.get("qformer_hidden_size", 768))


# ---------------------------------------------------------------------------------------- output


def _n(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def format_plan(p: Plan) -> str:
    """The plan as text: a parameter table per part and group, then the memory table."""
    lines = [f"phase {p.phase}: {p.nodes} node(s) x {p.gpus} GPU(s)", ""]
    lines.append(f"{'part / group':<28}{'params':>12}{'trainable':>12}")
    for part in p.parts:
        total, trainable = p.part_totals(part.name)
        lines.append(f"{part.name:<28}{_n(total):>12}{_n(trainable):>12}   [{part.source}]")
        for group, n in part.groups.items():
            lines.append(f"  {group:<26}{_n(n):>12}{_n(n) if group in p.trainable_groups else '-':>12}")
    lines.append(f"{'total':<28}{_n(p.total):>12}{_n(p.trainable):>12}")
    lines += ["", f"{'stage':<22}{'per GPU':>12}{'per node CPU':>14}"]
    for stage, est in p.estimates.items():
        mark = "  <- strategy config" if stage == p.strategy else ""
        lines.append(f"{stage:<22}{est['gpu'] / GIB:>10.1f} G{est['cpu'] / GIB:>12.1f} G{mark}")
    lines += [""] + [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def plan_main(configs: Sequence[str | Path], gpus: int = 1, nodes: int = 1) -> int:
    """Prints the plan of `configs` (what ``unifashion plan`` runs); returns the exit status."""
    with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed's import banner
        result = plan(configs, gpus, nodes)
    print(format_plan(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unifashion.planning --config PHASE.yaml [--config deepspeed/zero3.yaml] --gpus N``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    return plan_main(args.config, args.gpus, args.nodes)


if __name__ == "__main__":
    raise SystemExit(main())
