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
