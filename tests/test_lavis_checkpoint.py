"""LAVIS-keyed BLIP-2 (SPRC / UniFashion CIR release format) -> MultimodalEncoder.

The LAVIS state dict is built in the test from a tiny encoder by an inverse mapping written here
independently of the converter (HF names -> LAVIS names, qkv.bias -> q_bias / v_bias); loading it
into a fresh encoder must give the same retrieval scores, and every key that cannot be placed is
reported.
"""

from __future__ import annotations

import logging

import pytest
import torch

from unifashion.models.encoder import EncoderConfig, MultimodalEncoder
from unifashion.models.lavis_checkpoint import load_lavis_state_dict
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.scoring import score_matrix

TEXTS = ["red cotton shirt with long sleeves", "blue denim jeans", "black leather jacket with a zip"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wp")
    train_wordpiece_tokenizer(TEXTS * 3, out, vocab_size=200)
    return str(out)


def to_lavis(encoder: MultimodalEncoder) -> dict[str, torch.Tensor]:
    """The inverse renaming, spelled out key by key (LAVIS blip2_qformer / eva_vit names)."""
    hf = encoder.model.state_dict()
    out: dict[str, torch.Tensor] = {"query_tokens": hf["query_tokens"], "temp": encoder.temp.detach().clone()}
    out["ln_vision.weight"] = hf["vision_model.post_layernorm.weight"]
    out["ln_vision.bias"] = hf["vision_model.post_layernorm.bias"]
    out["visual_encoder.cls_token"] = hf["vision_model.embeddings.class_embedding"]
    out["visual_encoder.pos_embed"] = hf["vision_model.embeddings.position_embedding"]
    for p in ("weight", "bias"):
        out[f"visual_encoder.patch_embed.proj.{p}"] = hf[f"vision_model.embeddings.patch_embedding.{p}"]
    n_vis = encoder.model.config.vision_config.num_hidden_layers
    for i in range(n_vis):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual_encoder.blocks.{i}."
        for p in ("weight", "bias"):
            out[dst + f"norm1.{p}"] = hf[src + f"layer_norm1.{p}"]
            out[dst + f"norm2.{p}"] = hf[src + f"layer_norm2.{p}"]
            out[dst + f"attn.proj.{p}"] = hf[src + f"self_attn.projection.{p}"]
            out[dst + f"mlp.fc1.{p}"] = hf[src + f"mlp.fc1.{p}"]
            out[dst + f"mlp.fc2.{p}"] = hf[src + f"mlp.fc2.{p}"]
        out[dst + "attn.qkv.weight"] = hf[src + "self_attn.qkv.weight"]
        q, k, v = hf[src + "self_attn.qkv.bias"].chunk(3)
        assert k.abs().sum() == 0, "EVA ViT has no key bias"
        out[dst + "attn.q_bias"], out[dst + "attn.v_bias"] = q, v
    out["Qformer.bert.embeddings.word_embeddings.weight"] = hf["embeddings.word_embeddings.weight"]
    out["Qformer.bert.embeddings.position_embeddings.weight"] = hf["embeddings.position_embeddings.weight"]
    out["Qformer.bert.embeddings.LayerNorm.weight"] = hf["qformer.layernorm.weight"]
    out["Qformer.bert.embeddings.LayerNorm.bias"] = hf["qformer.layernorm.bias"]
    out["Qformer.bert.embeddings.position_ids"] = torch.arange(32)[None]
    for key, value in hf.items():
        if not key.startswith("qformer.encoder.layer."):
            continue
        rest = key[len("qformer.encoder.layer."):]
        rest = rest.replace(".attention.attention.", ".attention.self.").replace(
            ".crossattention.attention.", ".crossattention.self.")
        out["Qformer.bert.encoder.layer." + rest] = value
    for ours, theirs in (("vision_projection", "vision_proj"), ("text_projection", "text_proj"), ("itm_head", "itm_head")):
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = hf[f"{ours}.{p}"]
    return {k: v.clone() for k, v in out.items()}


def _scores(enc, pixels, tok):
    with torch.no_grad():
        image = enc.encode_image(pixels)
        text = enc.encode_text(tok["input_ids"], tok["attention_mask"])
        itm = enc.itm_logits(image.vision_embeds, tok["input_ids"], tok["attention_mask"])
        _, fused = enc.fuse(image.vision_embeds, tok["input_ids"], tok["attention_mask"])
    return score_matrix(image.image_feats, text.text_feat), itm, score_matrix(image.image_feats, fused)


def test_round_trip_gives_equal_scores_and_reports_unplaced(tok_dir, caplog):
    cfg = EncoderConfig.tiny(tok_dir, vision_layers=2, qformer_layers=2, cross_attention_frequency=2)
    torch.manual_seed(0)
    source = MultimodalEncoder(cfg).eval()
    with torch.no_grad():
        source.temp.fill_(0.042)
        for i in range(2):  # a trained-looking q/v bias (the key part stays 0, as EVA has none)
            bias = source.model.vision_model.encoder.layers[i].self_attn.qkv.bias
            h = bias.shape[0] // 3
            bias[:h].normal_()
            bias[2 * h:].normal_()
    lavis = to_lavis(source)
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(3)  # the Q-Former LM head: no place in the encoder
    lavis["prompt_tokens"] = torch.zeros(1, 2, 3)
    torch.manual_seed(1)
    target = MultimodalEncoder(cfg).eval()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tok = target.tokenize(TEXTS)
    before = _scores(target, pixels, tok)
    with caplog.at_level(logging.WARNING):
        report = load_lavis_state_dict(target, lavis)
    after, expected = _scores(target, pixels, tok), _scores(source, pixels, tok)
    for a, e, b in zip(after, expected, before):
        assert torch.allclose(a, e, atol=1e-5)
        assert not torch.allclose(b, e, atol=1e-3)  # the load changed something
    assert report.missing == []
    assert set(report.unplaced) == {"Qformer.cls.predictions.bias", "prompt_tokens"}
    assert report.temperature == pytest.approx(0.042)
    assert "Qformer.cls.predictions.bias" in caplog.text and "prompt_tokens" in caplog.text


def test_shape_mismatch_and_missing_weights_are_reported(tok_dir, tmp_path):
    small = MultimodalEncoder(EncoderConfig.tiny(tok_dir, qformer_layers=1, vision_layers=1)).eval()
    big = MultimodalEncoder(EncoderConfig.tiny(tok_dir, qformer_layers=2, vision_layers=1, embed_dim=8)).eval()
    lavis = to_lavis(small)
    del lavis["temp"]
    path = tmp_path / "ckpt.pth"
    torch.save({"model": lavis, "epoch": 3}, path)  # LAVIS's checkpoint layout
    report = load_lavis_state_dict(big, path, warn=False)
    assert "vision_projection.weight" in report.unplaced and "shape" in report.unplaced["vision_projection.weight"]
    assert any(k.startswith("qformer.encoder.layer.1.") for k in report.missing)  # the deeper layer got nothing
    assert "temp" in report.missing
