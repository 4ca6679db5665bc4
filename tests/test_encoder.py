"""The multimodal encoder (BLIP-2 vision + Q-Former) and the tokenizer trainers."""

import json
import shutil

import pytest
import torch
from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

from unifashion.losses.contrastive import ItcLoss
from unifashion.losses.matching import ItmLoss
from unifashion.models.encoder import EXTRAS_FILE, EncoderConfig, MultimodalEncoder
from unifashion.models.freezing import apply_freeze_policy
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

CAPTIONS = [
    "red cotton t-shirt with short sleeves",
    "blue denim jeans, slim fit",
    "black leather jacket with a zip",
    "white linen shirt with long sleeves",
    "green wool sweater, crew neck",
    "yellow silk dress with floral print",
]



@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece_tokenizer(CAPTIONS * 3, out, vocab_size=300)
    return str(out)


@pytest.fixture(scope="module")
def saved_dir(tok_dir, tmp_path_factory):
    torch.manual_seed(0)
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir))
    out = tmp_path_factory.mktemp("encoder")
    encoder.save_pretrained(out)
    return str(out)


def _images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- tokenizers


def test_wordpiece_tokenizer_is_bert_style(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = tok("RED Cotton Shirt")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:-1] == ["red", "cotton", "shirt"]  # lower-cased, whole words from the corpus
    assert tok.pad_token_id == 0 and tok.bos_token == "[DEC]" and tok.mask_token == "[MASK]"
    assert tok.decode(ids, skip_special_tokens=True) == "red cotton shirt"
    batch = tok(["red", "blue denim jeans"], padding=True)
    assert batch["attention_mask"][0].count(0) == 2 and batch["input_ids"][0][-1] == 0


def test_bpe_tokenizer_is_llama_style(tmp_path):
    train_bpe_tokenizer(CAPTIONS * 3, tmp_path, vocab_size=320)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok("Red Linen, slim!")["input_ids"]
    assert ids[0] == tok.bos_token_id == tok.convert_tokens_to_ids("<s>")
    assert tok.eos_token == "</s>" and tok.pad_token == "<pad>" and tok.unk_token == "<unk>"
    assert ids[-1] != tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Red Linen, slim!"  # byte-level: lossless
    assert len(tok) <= 320


def test_tokenizer_rejects_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece_tokenizer([], tmp_path)


# ---------------------------------------------------------------- construction and loading


def test_fresh_encoder_has_sane_init(tok_dir):
    for std in (0.02, 0.1):  # the BLIP-2 value and the tiny preset's
        encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir, init_std=std))
        model = encoder.model
        assert 0.5 * std < model.query_tokens.std().item() < 1.5 * std
        assert 0.5 * std < model.vision_model.encoder.layers[0].mlp.fc1.weight.std().item() < 1.5 * std
        assert 0.5 * std < model.vision_model.embeddings.position_embedding.std().item() < 1.5 * std
        assert (
            0.5 * std
            < model.qformer.encoder.layer[0].crossattention.attention.key.weight.std().item()
            < 1.5 * std
        )
    assert model.embeddings.word_embeddings.num_embeddings == len(encoder.tokenizer)
    assert encoder.temperature.item() == pytest.approx(0.07)


def test_parity_with_transformers_retrieval_model(tok_dir, saved_dir):
    encoder = MultimodalEncoder(EncoderConfig(pretrained=saved_dir)).eval()
    reference = Blip2ForImageTextRetrieval.from_pretrained(saved_dir).eval()
    assert reference.config.qformer_config.use_qformer_text_input
    pixels = _images(3)
    tokens = encoder.tokenize(CAPTIONS[:3])
    with torch.no_grad():
        image = encoder.encode_image(pixels)
        text = encoder.encode_text(**tokens)
        sims = torch.einsum("bqe,te->btq", image.image_feats, text.text_feat).max(dim=-1).values  # (B, T)
        ref_itc = reference(
            pixel_values=pixels, **tokens, use_image_text_matching_head=False
        ).logits_per_image
        itm = encoder.itm_logits(image.vision_embeds, **tokens)
        ref_itm = reference(pixel_values=pixels, **tokens, use_image_text_matching_head=True).logits_per_image
    assert sims.shape == (3, 3) and itm.shape == (3, 2)
    assert torch.allclose(sims, ref_itc, atol=1e-6)
    assert torch.allclose(itm, ref_itm, atol=1e-6)
    assert sims.std() > 1e-3  # not a degenerate model
    assert torch.allclose(image.image_feats.norm(dim=-1), torch.ones(3, 4), atol=1e-5)


def test_fuse_is_the_joint_mode(saved_dir):
    encoder = MultimodalEncoder.from_pretrained(saved_dir).eval()
    tokens = encoder.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        vision = encoder.encode_image(_images(2)).vision_embeds
        other = encoder.encode_image(_images(2, seed=1)).vision_embeds
        query_output, fusion_feat = encoder.fuse(vision, **tokens)
        itm = encoder.itm_logits(vision, **tokens)
        moved = encoder.fuse(other, **tokens)[1]
        text_only = encoder.encode_text(**tokens).text_feat
    assert query_output.shape == (2, 4, 32) and fusion_feat.shape == (2, 16)
    # the ITM logits are the ITM head on these query outputs, averaged over the queries (eq. 4)
    assert torch.allclose(encoder.model.itm_head(query_output).mean(dim=1), itm, atol=1e-6)
    # bi-directional: the text token sees the image through the queries; the text-only path does not
    assert not torch.allclose(fusion_feat, moved, atol=1e-4)
    assert not torch.allclose(fusion_feat, text_only, atol=1e-4)
    assert torch.allclose(fusion_feat.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_text_path_ignores_padding(saved_dir):
    encoder = MultimodalEncoder.from_pretrained(saved_dir).eval()
    tokens = encoder.tokenize(["red shirt"])
    padded_ids = torch.cat([tokens["input_ids"], torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([tokens["attention_mask"], torch.zeros(1, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = encoder.encode_text(**tokens).text_feat
        b = encoder.encode_text(padded_ids, padded_mask).text_feat
    assert torch.allclose(a, b, atol=1e-5)


def test_save_load_round_trip(tok_dir, tmp_path):
    torch.manual_seed(1)
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir, freeze_vision=False))
    with torch.no_grad():
        encoder.temp.fill_(0.05)
        encoder.model.itm_head.bias.add_(0.3)
    encoder.save_pretrained(tmp_path)
    extras = json.loads((tmp_path / EXTRAS_FILE).read_text())
    assert extras["config"]["freeze_vision"] is False and extras["config"]["num_query_tokens"] == 4
    loaded = MultimodalEncoder.from_pretrained(tmp_path)
    assert loaded.temperature.item() == pytest.approx(0.05)
    assert loaded.config.freeze_vision is False
    encoder.eval()
    loaded.eval()
    tokens = encoder.tokenize(CAPTIONS[:2])
    assert torch.equal(tokens["input_ids"], loaded.tokenize(CAPTIONS[:2])["input_ids"])
    with torch.no_grad():
        a, b = encoder.encode_image(_images(2)), loaded.encode_image(_images(2))
        assert torch.equal(a.image_feats, b.image_feats)
        assert torch.equal(encoder.encode_text(**tokens).text_feat, loaded.encode_text(**tokens).text_feat)
        assert torch.equal(
            encoder.itm_logits(a.vision_embeds, **tokens), loaded.itm_logits(b.vision_embeds, **tokens)
        )
    assert MultimodalEncoder.from_pretrained(tmp_path, freeze_vision=True).config.freeze_vision is True


def test_missing_paths_and_keys_are_clear_errors(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        MultimodalEncoder(EncoderConfig(pretrained=str(tmp_path / "does-not-exist")))
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        MultimodalEncoder.from_pretrained(tmp_path / "does-not-exist")
    with pytest.raises(ValueError, match="tokenizer"):
        MultimodalEncoder(EncoderConfig(image_size=32, patch_size=8))
    # a checkpoint without the Q-Former's text layers (use_qformer_text_input=False) must not load silently
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir))
    config = encoder.model.config
    config.qformer_config.use_qformer_text_input = False
    Blip2ForImageTextRetrieval(config).save_pretrained(tmp_path / "no_text")
    with pytest.raises(ValueError, match="missing keys.*intermediate"):
        MultimodalEncoder(EncoderConfig(pretrained=str(tmp_path / "no_text"), tokenizer=tok_dir))


def test_legacy_qformer_text_input_key_loads_the_text_layers(saved_dir, tmp_path):
    # Salesforce/blip2-itm-vit-g's config spells the flag `qformer_text_input`
    legacy = tmp_path / "legacy"
    shutil.copytree(saved_dir, legacy)
    (legacy / EXTRAS_FILE).unlink()
    config = json.loads((legacy / "config.json").read_text())
    config["qformer_config"].pop("use_qformer_text_input")
    config["qformer_config"]["qformer_text_input"] = True
    (legacy / "config.json").write_text(json.dumps(config))
    encoder = MultimodalEncoder(EncoderConfig(pretrained=str(legacy))).eval()
    reference = MultimodalEncoder(EncoderConfig(pretrained=saved_dir)).eval()
    assert encoder.temperature.item() == pytest.approx(0.07)  # not in HF weights: fresh init
    tokens = encoder.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        assert torch.equal(encoder.encode_text(**tokens).text_feat, reference.encode_text(**tokens).text_feat)


def test_uncached_hub_id_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="nobody/no-such-blip2"):
        MultimodalEncoder(EncoderConfig(pretrained="nobody/no-such-blip2"))


def test_parameter_groups_partition_and_freeze(tok_dir):
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir))
    groups = encoder.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(encoder.parameters()))
    # the encoder freezes nothing itself; the one policy (models/freezing.py) does
    assert all(p.requires_grad for p in encoder.parameters())
    counts = apply_freeze_policy(groups, ["vision", "temperature", "llm"], exclude=["temperature"])
    assert encoder.trainable_groups() == ["vision"]
    assert counts["vision"] == sum(p.numel() for p in encoder.vision_parameters()) and counts["qformer"] == 0


def test_temperature_is_clamped(tok_dir):
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir))
    with torch.no_grad():
        encoder.temp.fill_(2.0)
    assert encoder.temperature.item() == pytest.approx(0.5)
    with torch.no_grad():
        encoder.temp.fill_(-1.0)
    assert encoder.temperature.item() == pytest.approx(0.001)


def test_gradient_checkpointing_gives_the_same_gradients(saved_dir):
    grads, calls = [], []
    for checkpointing in (False, True):
        encoder = MultimodalEncoder.from_pretrained(saved_dir, gradient_checkpointing=checkpointing)
        assert encoder.training and encoder.model.training
        count = [0]
        encoder.model.qformer.encoder.layer[0].attention.register_forward_hook(
            lambda *_, c=count: c.__setitem__(0, c[0] + 1)
        )
        tokens = encoder.tokenize(CAPTIONS[:2])
        image = encoder.encode_image(_images(2))
        loss = encoder.itm_logits(image.vision_embeds, **tokens).sum() + image.image_feats.sum()
        loss.backward()
        grads.append(encoder.model.query_tokens.grad.clone())
        calls.append(count[0])
    assert calls == [2, 4]  # with checkpointing the backward re-runs each layer's forward
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_tiny_encoder_learns_itc_and_itm(tok_dir):
    torch.manual_seed(0)
    encoder = MultimodalEncoder(EncoderConfig.tiny(tok_dir, freeze_vision=False)).train()
    gen = torch.Generator().manual_seed(3)
    colours = torch.randn(6, 3, 1, 1, generator=gen).expand(6, 3, 32, 32)
    pixels = colours + 0.1 * torch.randn(
        6, 3, 32, 32, generator=gen
    )  # (6, 3, 32, 32) one garment colour each
    product_ids = torch.arange(6)
    tokens = encoder.tokenize(CAPTIONS)
    itc, itm = ItcLoss(), ItmLoss()
    optimiser = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(25):
        image = encoder.encode_image(pixels)
        text = encoder.encode_text(**tokens)
        result = itc.compute(image.image_feats, text.text_feat, encoder.temperature, product_ids)
        loss_itm = itm(
            encoder,
            image.vision_embeds,
            **tokens,
            sim_i2t=result.sim_i2t,
            sim_t2i=result.sim_t2i,
            product_ids=product_ids,
            generator=gen,
        )["itm"]
        loss = result.losses["itc"] + loss_itm
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append((result.losses["itc"].item(), loss_itm.item()))
    first_itc = losses[0][0]
    last_itc = sum(itc_value for itc_value, _ in losses[-3:]) / 3
    assert last_itc < 0.6 * first_itc, losses  # chance level is log(6) = 1.79; the floor with smoothing ~0.46
    assert sum(losses[-1]) < sum(losses[0]), losses
