"""The checkpoint chain with *pretrained directories* (the path real users take):
phase1_retrieval -> phase1_generative -> phase2_composed -> finetune_tryon.

Every part is loaded from a tiny pretrained directory (encoder: `MultimodalEncoder.save_pretrained`;
LLM: an HF causal-LM directory; generator: a diffusers directory with unet/ vae/ scheduler/), so the
trainable-only checkpoints leave out the frozen pretrained weights. At each step the test checks that
every weight trained so far arrives in the next phase with its value (tensor equality), that the
checkpoint leaves out exactly the frozen weights that still equal their pretrained files, and that
a checkpoint which lost a trained weight is refused by name.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tiny import tiny_encoder_config

from unifashion.models.captioner import CaptionerConfig, build_tiny_language_model, load_tokenizer
from unifashion.models.encoder import EncoderConfig, MultimodalEncoder
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.module import CHAIN_KEY, UniFashionModule
from unifashion.optim import OptimizerConfig

CORPUS = ["blue jeans", "red dress", "wool coat", "white shirt", "striped cotton shirt", "black leather belt"]
GEN = dict(num_queries=4, height=16, width=16, sample_size=8, block_out_channels=(16, 32), attention_from_block=0,
           cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8, vae_block_out_channels=(8, 16),
           num_train_timesteps=100, cond_dropout=0.0)
OPT = OptimizerConfig(lr=1e-2, eps=1e-3, weight_decay=0.0, schedule="constant")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from unifashion.models.instructions import INSTRUCTIONS
    from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("chain")
    corpus = CORPUS + ["USER: <Img> </Img> Assistant:"] + [s for v in INSTRUCTIONS.values() for s in v]
    train_wordpiece_tokenizer(corpus * 3, root / "qtok", vocab_size=200)
    train_bpe_tokenizer(corpus * 3, root / "ltok", vocab_size=300)
    torch.manual_seed(0)
    MultimodalEncoder(tiny_encoder_config(root / "qtok", freeze_vision=True)).save_pretrained(root / "encoder")
    tokenizer = load_tokenizer(root / "ltok")
    llm = build_tiny_language_model(CaptionerConfig(tokenizer=str(root / "ltok"), hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64), tokenizer)
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    Generator(GeneratorConfig(**GEN), query_dim=32).save_pretrained(root / "sd")
    return root


def _encoder(d) -> EncoderConfig:
    return EncoderConfig(pretrained=str(d / "encoder"), freeze_vision=True, qformer_dropout=0.0)


def _captioner(d) -> CaptionerConfig:
    return CaptionerConfig(llm=str(d / "llm"), lora_rank=4, lora_alpha=8, lora_dropout=0.0, max_caption_tokens=16)


def _generator(d, variant="plain") -> dict:
    return {**GEN, "pretrained": str(d / "sd"), "variant": variant}


def _pairs(module, n=4):
    g = torch.Generator().manual_seed(2)
    return {"kind": "pairs", "dataset": "fashiongen", "image": torch.randn(n, 3, 16, 16, generator=g),
            "text": CORPUS[:n], "product_id": torch.arange(n), **module.encoder.tokenize(CORPUS[:n])}


def _triplets(module, n=4):
    g = torch.Generator().manual_seed(3)
    texts = ["is darker", "has long sleeves", "is shorter", "is red"][:n]
    return {"kind": "triplets", "dataset": "fashioniq", "category": ["dress"] * n,
            "reference": torch.randn(n, 3, 16, 16, generator=g), "target": torch.randn(n, 3, 16, 16, generator=g),
            "text": texts, "reference_id": [f"r{i}" for i in range(n)], "target_id": [f"t{i}" for i in range(n)],
            "target_caption": CORPUS[:n], **module.encoder.tokenize(texts)}


def _tryon(module, n=2):
    g = torch.Generator().manual_seed(4)
    mask = torch.zeros(n, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    image = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    return {"kind": "tryon", "dataset": "vitonhd", "image": image, "agnostic": image * (1 - mask),
            "cloth": torch.rand(n, 3, 16, 16, generator=g) * 2 - 1, "inpaint_mask": mask,
            "image_clip": torch.randn(n, 3, 16, 16, generator=g), "text": CORPUS[:n],
            "person_id": [f"p{i}" for i in range(n)], "cloth_id": [f"c{i}" for i in range(n)],
            **module.encoder.tokenize(CORPUS[:n])}


def _fit(module, batch, path):
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(path.parent), num_sanity_val_steps=0)
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    trainer.save_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _weights(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _trained(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _assert_arrived(module, expected: dict[str, torch.Tensor], keys):
    got = dict(module.named_parameters())
    for k in keys:
        torch.testing.assert_close(got[k].detach(), expected[k], rtol=0, atol=0, msg=k)


def test_chain_retrieval_generative_phase2_tryon(dirs, tmp_path):
    d = dirs
    pretrained_encoder = MultimodalEncoder.from_pretrained(d / "encoder")
    pre = {f"encoder.model.{k}": v for k, v in pretrained_encoder.model.state_dict().items()}

    # phase 1 retrieval: the Q-Former trains, the ViT stays frozen (and is left out of the checkpoint)
    L.seed_everything(0)
    p1 = UniFashionModule(_encoder(d), phase="phase1_retrieval", optimizer=OPT)
    ck1 = _fit(p1, _pairs(p1), tmp_path / "p1.ckpt")
    w1, t1 = _weights(p1), _trained(p1)
    assert any(k.startswith("encoder.model.qformer.") for k in t1)
    assert all(not k.startswith("encoder.model.vision_model.") for k in ck1["state_dict"])
    assert t1 <= set(ck1["state_dict"]) and set(ck1[CHAIN_KEY]["trained"]) == t1
    assert (w1["encoder.model.query_tokens"] - pre["encoder.model.query_tokens"]).abs().max() > 0
    assert all(not hasattr(v, "__dataclass_fields__") for v in ck1["hyper_parameters"].values())  # plain data

    # phase 1 generative: the Q-Former is frozen now but was trained: it is kept in the checkpoint
    L.seed_everything(0)
    p2 = UniFashionModule(_encoder(d), captioner=_captioner(d), generator=_generator(d), phase="phase1_generative",
                          optimizer=OPT, init_from=str(tmp_path / "p1.ckpt"))
    _assert_arrived(p2, w1, t1)
    ck2 = _fit(p2, _pairs(p2), tmp_path / "p2.ckpt")
    w2, t2 = _weights(p2), _trained(p2)
    kept = set(ck2["state_dict"])
    assert t1 <= kept and t2 <= kept
    assert not any(k.startswith(("encoder.model.vision_model.", "generator.vae.")) for k in kept)
    assert not any(k.startswith("captioner.language_model.") and "lora_" not in k for k in kept)
    assert set(ck2[CHAIN_KEY]["trained"]) == t1 | t2
    assert ck2[CHAIN_KEY]["phases"] == ["phase1_retrieval", "phase1_generative"]
    _assert_arrived(p2, w1, t1)  # frozen in phase 1-generative: unchanged

    # phase 2 composed: the Q-Former trains again; LoRA and the UNet (trained in phase 1) are frozen, kept
    L.seed_everything(0)
    p3 = UniFashionModule(_encoder(d), captioner=_captioner(d), generator=_generator(d), phase="phase2_composed",
                          optimizer=OPT, init_from=str(tmp_path / "p2.ckpt"))
    _assert_arrived(p3, w2, t1 | t2)
    ck3 = _fit(p3, _triplets(p3), tmp_path / "p3.ckpt")
    w3, t3 = _weights(p3), _trained(p3)
    unet_keys = {k for k in t2 if k.startswith("generator.unet.")}
    lora_keys = {k for k in t2 if "lora_" in k}
    assert unet_keys and lora_keys and not (unet_keys | lora_keys) & t3
    assert (t1 | t2 | t3) <= set(ck3["state_dict"])
    _assert_arrived(p3, w2, unet_keys | lora_keys)
    moved = [k for k in t3 if k.startswith("encoder.model.qformer.") and not torch.equal(w3[k], w2[k])]
    assert moved

    # try-on: no captioner (its keys are skipped); the UNet input is widened 4 -> 9 channels (zero-padded)
    L.seed_everything(0)
    p4 = UniFashionModule(_encoder(d), generator=_generator(d, "tryon"), phase="finetune_tryon", optimizer=OPT,
                          init_from=str(tmp_path / "p3.ckpt"))
    carried = {k for k in t1 | t2 | t3 if not k.startswith("captioner.") and "conv_in.weight" not in k}
    _assert_arrived(p4, w3, carried)
    conv = dict(p4.named_parameters())["generator.unet.conv_in.weight"].detach()
    torch.testing.assert_close(conv[:, :4], w3["generator.unet.conv_in.weight"], rtol=0, atol=0)
    assert conv.shape[1] == 9 and not conv[:, 4:].any()
    assert p4._init_skipped and all(k.startswith("captioner.") for k in p4._init_skipped)
    ck4 = _fit(p4, _tryon(p4), tmp_path / "p4.ckpt")
    w4 = _weights(p4)
    assert {k for k in t1 | t2 | t3 if not k.startswith("captioner.")} <= set(ck4["state_dict"])
    assert ck4[CHAIN_KEY]["phases"][-1] == "finetune_tryon"

    # the final checkpoint reloads whole: kept weights from the file, the rest from the pretrained dirs
    reloaded = UniFashionModule.load_from_checkpoint(tmp_path / "p4.ckpt", map_location="cpu", weights_only=True)
    _assert_arrived(reloaded, w4, w4.keys())


def test_init_from_refuses_a_checkpoint_that_lost_trained_weights(dirs, tmp_path):
    d = dirs
    L.seed_everything(0)
    p1 = UniFashionModule(_encoder(d), phase="phase1_retrieval", optimizer=OPT)
    ck = _fit(p1, _pairs(p1), tmp_path / "p1.ckpt")
    lost = {k: v for k, v in ck["state_dict"].items() if not k.startswith("encoder.model.qformer.")}
    torch.save({**ck, "state_dict": lost}, tmp_path / "lost.ckpt")
    old = {k: v for k, v in ck.items() if k != CHAIN_KEY}  # a checkpoint written before the chain record
    torch.save({**old, "state_dict": lost}, tmp_path / "lost_old.ckpt")
    for name in ("lost.ckpt", "lost_old.ckpt"):
        with pytest.raises(ValueError, match=r"encoder\.model\.qformer\."):
            UniFashionModule(_encoder(d), captioner=_captioner(d), phase="phase1_captioning",
                             init_from=str(tmp_path / name))
    with pytest.raises(ValueError, match="directory"):
        UniFashionModule(_encoder(d), init_from=str(tmp_path))


def test_old_format_checkpoint_with_pickled_configs_still_loads(dirs, tmp_path):
    """Checkpoints written before hyper-parameters were plain data pickled the config dataclasses."""
    d = dirs
    L.seed_everything(0)
    module = UniFashionModule(tiny_encoder_config(d / "qtok"), optimizer=OPT)
    ck = _fit(module, _pairs(module), tmp_path / "new.ckpt")
    old = {k: v for k, v in ck.items() if k != CHAIN_KEY}
    old["hyper_parameters"] = {**ck["hyper_parameters"], "encoder": tiny_encoder_config(d / "qtok"),
                               "optimizer": OPT}
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(Exception):  # noqa: B017  (the old format needs full unpickling)
        torch.load(tmp_path / "old.ckpt", weights_only=True)
    reloaded = UniFashionModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu", weights_only=False)
    _assert_arrived(reloaded, _weights(module), _trained(module))
    follower = UniFashionModule(tiny_encoder_config(d / "qtok"), init_from=str(tmp_path / "old.ckpt"))
    _assert_arrived(follower, _weights(module), _trained(module))
