"""Load a LAVIS-keyed BLIP-2 checkpoint (the SPRC / UniFashion CIR release format) into the encoder.

The released composed-retrieval checkpoints are LAVIS ``Blip2QformerCir*`` state dicts (a plain
state dict, or LAVIS's ``{"model": state_dict, ...}``) with the keys

    query_tokens, ln_vision.*, visual_encoder.* (EVA ViT), Qformer.bert.* (BERT-style Q-Former),
    Qformer.cls.* (its LM head), vision_proj.*, text_proj.*, itm_head.*, temp

`MultimodalEncoder` wraps transformers' ``Blip2ForImageTextRetrieval``; this module renames the
first set into the second (the renaming transformers' own BLIP-2 conversion script applies):

=========================================================  ==================================================
LAVIS                                                      ``MultimodalEncoder.model`` (HF)
=========================================================  ==================================================
query_tokens                                               query_tokens
ln_vision.{weight,bias}                                    vision_model.post_layernorm.*
visual_encoder.cls_token / pos_embed                       vision_model.embeddings.class_embedding / position_embedding
visual_encoder.patch_embed.proj.*                          vision_model.embeddings.patch_embedding.*
visual_encoder.blocks.i.norm1 / norm2                      vision_model.encoder.layers.i.layer_norm1 / layer_norm2
visual_encoder.blocks.i.attn.qkv.weight                    ...layers.i.self_attn.qkv.weight
visual_encoder.blocks.i.attn.{q_bias,v_bias}               ...layers.i.self_attn.qkv.bias = [q_bias, 0, v_bias]
visual_encoder.blocks.i.attn.proj.*                        ...layers.i.self_attn.projection.*
visual_encoder.blocks.i.mlp.fc1 / fc2                      ...layers.i.mlp.fc1 / fc2
Qformer.bert.embeddings.{word,position}_embeddings         embeddings.{word,position}_embeddings
Qformer.bert.embeddings.LayerNorm                          qformer.layernorm
Qformer.bert.encoder.layer.i.attention.self.*              qformer.encoder.layer.i.attention.attention.*
Qformer.bert.encoder.layer.i.crossattention.self.*         qformer.encoder.layer.i.crossattention.attention.*
Qformer.bert.encoder.layer.i.{attention,crossattention}.output.*, intermediate(_query).*, output(_query).*: same
vision_proj / text_proj / itm_head                         vision_projection / text_projection / itm_head
temp                                                       MultimodalEncoder.temp
=========================================================  ==================================================

Every key that cannot be placed (the Q-Former LM head ``Qformer.cls.*``, an LLM or UNet branch, a
shape that does not fit) is listed in the returned report and logged as a warning, and every
encoder weight the checkpoint did not provide is listed too: nothing is dropped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unifashion.models.encoder import TEMPERATURE_RANGE, MultimodalEncoder

log = logging.getLogger(__name__)

_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^query_tokens$", "query_tokens"),
        (r"^ln_vision\.(weight|bias)$", r"vision_model.post_layernorm.\1"),
        (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
        (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
        (r"^visual_encoder\.patch_embed\.proj\.(weight|bias)$", r"vision_model.embeddings.patch_embedding.\1"),
        (r"^visual_encoder\.blocks\.(\d+)\.norm1\.(weight|bias)$", r"vision_model.encoder.layers.\1.layer_norm1.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.norm2\.(weight|bias)$", r"vision_model.encoder.layers.\1.layer_norm2.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
        (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
         r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
        (r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight$", r"embeddings.\1.weight"),
        (r"^Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)$", r"qformer.layernorm.\1"),
        (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)$",
         r"qformer.encoder.layer.\1.\2.attention.\3.\4"),
        (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)$",
         r"qformer.encoder.layer.\1.\2.output.\3.\4"),
        (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate|intermediate_query)\.dense\.(weight|bias)$",
         r"qformer.encoder.layer.\1.\2.dense.\3"),
        (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(output|output_query)\.(dense|LayerNorm)\.(weight|bias)$",
         r"qformer.encoder.layer.\1.\2.\3.\4"),
        (r"^vision_proj\.(weight|bias)$", r"vision_projection.\1"),
        (r"^text_proj\.(weight|bias)$", r"text_projection.\1"),
        (r"^itm_head\.(weight|bias)$", r"itm_head.\1"),
    )
)
_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")
_IGNORED_BUFFERS = re.compile(r"^Qformer\.bert\.embeddings\.position_ids$")
"""Non-persistent in transformers (recomputed): neither placed nor reported."""


@dataclass
class LavisLoadReport:
    """What `load_lavis_state_dict` did.

    Attributes:
        loaded: encoder keys (HF names) that received a checkpoint value.
        unplaced: checkpoint keys that could not be placed, with the reason.
        missing: encoder weights the checkpoint did not provide (they keep their current value).
        temperature: the ITC temperature read from ``temp`` (None when absent).
    """

    loaded: list[str] = field(default_factory=list)
    unplaced: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    temperature: float | None = None

    def summary(self) -> str:
        lines = [f"LAVIS checkpoint: {len(self.loaded)} encoder weights loaded, {len(self.unplaced)} keys NOT "
                 f"placed, {len(self.missing)} encoder weights NOT provided"]
        lines += [f"  not placed: {k} ({why})" for k, why in self.unplaced.items()]
        lines += [f"  not provided: {k}" for k in self.missing]
        return "\n".join(lines)


def lavis_key_to_hf(key: str) -> str | None:
    """The HF (``MultimodalEncoder.model``) name of a LAVIS key, or None when there is none
    (``q_bias`` / ``v_bias`` are merged into ``qkv.bias`` by `convert_lavis_state_dict`)."""
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def convert_lavis_state_dict(
    lavis: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str], torch.Tensor | None]:
    """LAVIS keys -> HF keys.

    Returns:
        (HF-keyed state dict, {unplaced LAVIS key: reason}, the ``temp`` tensor or None).
    """
    out: dict[str, torch.Tensor] = {}
    unplaced: dict[str, str] = {}
    qv: dict[str, dict[str, torch.Tensor]] = {}
    temp = None
    for key, value in lavis.items():
        if _IGNORED_BUFFERS.match(key):
            continue
        if key == "temp":
            temp = value
            continue
        m = _QV_BIAS.match(key)
        if m:
            qv.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        hf = lavis_key_to_hf(key)
        if hf is None:
            unplaced[key] = "no counterpart in the BLIP-2 retrieval encoder"
        else:
            out[hf] = value
    for layer, parts in qv.items():
        if set(parts) != {"q_bias", "v_bias"}:
            for name in parts:
                unplaced[f"visual_encoder.blocks.{layer}.attn.{name}"] = "q_bias and v_bias must come together"
            continue
        q, v = parts["q_bias"], parts["v_bias"]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    return out, unplaced, temp


def read_lavis_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A LAVIS checkpoint file's state dict (LAVIS saves ``{"model": state_dict, ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LAVIS checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path}: expected a LAVIS state dict (or {{'model': state_dict}})")
    return dict(ckpt)


def load_lavis_state_dict(
    encoder: MultimodalEncoder, lavis: Mapping[str, torch.Tensor] | str | Path, warn: bool = True
) -> LavisLoadReport:
    """Loads a LAVIS-keyed BLIP-2 (CIR) state dict into `encoder`, in place.

    Args:
        encoder: the encoder to fill; its sizes must be the checkpoint's (a key whose shape does
            not fit is reported, not loaded).
        lavis: the state dict, or a checkpoint file.
        warn: log the report as a warning when anything was not placed or not provided.

    Returns:
        The report (every unplaced checkpoint key and every encoder weight left as it was).
    """
    if not isinstance(lavis, Mapping):
        lavis = read_lavis_checkpoint(lavis)
    converted, unplaced, temp = convert_lavis_state_dict(lavis)
    own = encoder.model.state_dict()
    report = LavisLoadReport(unplaced=dict(unplaced))
    fitting: dict[str, torch.Tensor] = {}
    for hf, value in converted.items():
        if hf not in own:
            report.unplaced[hf] = "the encoder has no such weight (different depth?)"
        elif tuple(own[hf].shape) != tuple(value.shape):
            report.unplaced[hf] = f"shape {tuple(value.shape)} != encoder {tuple(own[hf].shape)}"
        else:
            fitting[hf] = value.to(own[hf].dtype)
    encoder.model.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    report.missing = sorted(k for k in own if k not in fitting)
    if temp is not None:
        with torch.no_grad():
            encoder.temp.copy_(temp.reshape(()).clamp(*TEMPERATURE_RANGE))
        report.temperature = float(encoder.temp.detach())
    else:
        report.missing.append("temp")
    if warn and (report.unplaced or report.missing):
        log.warning(report.summary())
    return report
