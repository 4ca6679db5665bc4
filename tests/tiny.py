"""Tiny model configurations shared by the tests (built from configs, no download)."""

from __future__ import annotations

from pathlib import Path

from unifashion.models.encoder import EncoderConfig


def tiny_encoder_config(tokenizer_dir: Path, **overrides) -> EncoderConfig:
    """A 16 px, width-32, 4-query encoder; `overrides` replace any field."""
    fields = dict(
        tokenizer=str(tokenizer_dir), image_size=16, patch_size=8, vision_hidden_size=32, vision_layers=1,
        vision_heads=2, vision_intermediate_size=64, qformer_hidden_size=32, qformer_layers=1,
        qformer_heads=2, qformer_intermediate_size=64, num_query_tokens=4, cross_attention_frequency=1,
        embed_dim=16, max_text_length=16, freeze_vision=False,
    )
    return EncoderConfig(**(fields | overrides))


def tiny_captioning_model(qformer_tokenizer: Path, llm_tokenizer: Path):
    """A seeded, randomly initialised phase1_captioning model (tiny encoder, 1-layer LLM + LoRA) behind the
    `UniFashion` API, in eval mode."""
    import torch

    from unifashion.api import UniFashion
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.module import UniFashionModule

    torch.manual_seed(0)
    module = UniFashionModule(
        EncoderConfig.tiny(str(qformer_tokenizer)),
        CaptionerConfig(llm=None, tokenizer=str(llm_tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64, lora_rank=4, lora_alpha=8),
        phase="phase1_captioning",
    )
    return UniFashion(module.eval(), show_progress=False)
